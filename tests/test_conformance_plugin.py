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


OWN_ADAPTER = """
import dla.reference as ref
CLAIMS = dict(ref.CLAIMS, levels=("plan",), dtypes=("float64",))
make_plan = ref.make_plan
forward = ref.forward
"""


def _pytest_exe() -> str:
    import shutil

    exe = shutil.which("pytest")
    if exe is None:
        pytest.skip("the pytest console script is not on PATH")
    return exe


def test_the_plain_pytest_command_finds_a_module_in_the_current_folder(tmp_path) -> None:
    """`pytest --dla-impl=my_dla` (not only `python -m pytest`) loads my_dla.py from the
    current folder, as `dla-conformance run --impl my_dla` does."""
    import subprocess

    (tmp_path / "my_dla.py").write_text(OWN_ADAPTER)
    result = subprocess.run([_pytest_exe(), "--dla-impl=my_dla", "--dla-levels=plan", "-q",
                             "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


def _stable(report: dict) -> str:
    for key in ("duration_s", "versions", "date"):
        report.pop(key, None)
    for r in report["results"]:
        r.pop("seconds", None)
    return json.dumps(report, sort_keys=True)


def test_xdist_gives_the_serial_report(tmp_path) -> None:
    """DLA-12.12: `pytest --dla-impl=X -n 2` runs the same checks (seeds per check, not per
    process) and writes one merged report equal to the serial run's, timings aside."""
    import subprocess

    pytest.importorskip("xdist")
    exe = _pytest_exe()
    args = ["--dla-impl=reference", "--dla-levels=plan,varlen,properties", "--dla-dtype=float32",
            "-q", "-p", "no:cacheprovider"]
    serial, parallel = tmp_path / "serial.json", tmp_path / "parallel.json"
    for path, extra in ((serial, []), (parallel, ["-n", "2"])):
        result = subprocess.run([exe, *args, f"--dla-report={path}", *extra], cwd=tmp_path,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    a, b = json.loads(serial.read_text()), json.loads(parallel.read_text())
    assert len(a["results"]) == len(b["results"]) > 10
    assert _stable(a) == _stable(b)
