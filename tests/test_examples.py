"""The README's adapter example certifies, and the suite would catch a bug in it."""

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from dla.conformance import certify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def adapter(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.third_party_adapter", None)
    return importlib.import_module("examples.third_party_adapter")


def test_adapter_example_certifies(adapter) -> None:
    report = certify(adapter, levels=["execute", "end_to_end"], profile="ci")
    assert report.passed, report.failed_clauses()
    assert {r.level for r in report.results} == {"execute", "end_to_end"}


def test_a_bug_in_the_example_kernel_is_caught(adapter, monkeypatch) -> None:
    kernel = adapter.my_masked_dla

    def without_decay(q, k, v, g, lam, *rest, **kw):
        return kernel(q, k, v, g.new_zeros(g.shape), lam, *rest, **kw)

    monkeypatch.setattr(adapter, "my_masked_dla", without_decay)
    report = certify(adapter, levels=["execute"], profile="ci")
    assert not report.passed
    assert "DLA-5.1" in report.failed_clauses()


def test_console_script_finds_modules_in_the_current_directory() -> None:
    """The README's command: `dla-conformance run --impl examples.third_party_adapter`."""
    import shutil
    import subprocess

    exe = shutil.which("dla-conformance")
    if exe is None:
        pytest.skip("the console script is not installed (pip install -e .)")
    result = subprocess.run(
        [exe, "run", "--impl", "examples.third_party_adapter", "--levels", "execute",
         "--no-progress", "--only-failures"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "examples.third_party_adapter: PASSED" in result.stdout
