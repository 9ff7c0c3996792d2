"""The pytest plugin: --dla-impl collects one item per conformance check."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

# The plugin is loaded through its pytest11 entry point (pyproject.toml), as in a
# kernel repository that installed dla-spec; naming it again with -p would register it twice.
PLUGIN: tuple[str, ...] = ()

BROKEN = """
import dla.reference as ref
CLAIMS = dict(ref.CLAIMS, levels=("execute",), dtypes=("float64",))
make_plan = ref.make_plan
def forward(*args, **kw):
    o, c = ref.forward(*args, **kw)
    return o * 1.01, c
"""


def test_reference_passes_one_item_per_check(pytester: pytest.Pytester) -> None:
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        *PLUGIN,
        "--dla-impl=reference",
        "--dla-levels=plan",
        "--dla-dtype=float32",
        f"--dla-report={report}",
    )
    result.assert_outcomes(passed=len(json.loads(report.read_text())["results"]))
    assert json.loads(report.read_text())["passed"] is True
    listed = pytester.runpytest_subprocess(
        *PLUGIN,
        "--dla-impl=reference",
        "--dla-levels=plan",
        "--dla-dtype=float32",
        "--collect-only",
        "-q",
    )
    listed.stdout.fnmatch_lines(["dla-conformance[[]reference[]]::plan[[]float32-cpu: *"])


def test_a_broken_implementation_fails_with_the_clause(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(brokenimpl=BROKEN)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess(
        *PLUGIN, "--dla-impl=brokenimpl", "--dla-levels=execute", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*execute DLA-5.1*rel_rms*"])


def test_without_dla_impl_the_plugin_adds_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_own():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess(*PLUGIN)
    result.assert_outcomes(passed=1)


def test_bad_impl_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(*PLUGIN, "--dla-impl=no_such_impl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no_such_impl*"])
