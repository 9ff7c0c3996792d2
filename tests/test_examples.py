"""The adapters in examples/ certify with the README's command, as a new user runs it.

Three CPU adapters (the README's own example, flash-linear-attention's naive
Log-Linear Attention as the fenwick policy, and its naive recurrent simple GLA
as DLA at capacity 1) are certified on every level they claim, properties and
the claims level included; a bug planted in one is caught. The GPU adapter of
fla's ``chunk_log_linear_attn`` is certified on the GPU machine
(benchmarks/fla_chunk_log_linear_certification.json); here it must load and be
refused cleanly for want of CUDA.
"""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from dla.conformance import certify

ROOT = Path(__file__).resolve().parents[1]
CPU_ADAPTERS = ("examples.third_party_adapter", "examples.fla_log_linear",
                "examples.fla_simple_gla")


def _load(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.fixture()
def adapter(monkeypatch):
    return _load(monkeypatch, "examples.third_party_adapter")


def _console() -> str:
    exe = shutil.which("dla-conformance")
    if exe is None:
        pytest.skip("the console script is not installed (pip install -e .)")
    return exe


@pytest.mark.parametrize("name", CPU_ADAPTERS)
def test_each_cpu_adapter_certifies_with_the_readme_command(name: str, tmp_path: Path,
                                                            monkeypatch) -> None:
    """DLA-11.6, DLA-12.12: `dla-conformance run --impl <module>` from the repository root,
    every claimed level plus properties and claims; the report says what it covers."""
    import json

    report = tmp_path / "r.json"
    result = subprocess.run([_console(), "run", "--impl", name, "--no-progress",
                             "--only-failures", "--report", str(report)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{name}: PASSED" in result.stdout
    d = json.loads(report.read_text())
    module = _load(monkeypatch, name)
    claimed = set(module.CLAIMS["levels"])
    assert set(d["levels"]) == claimed | {"properties", "claims", "robustness"} and d["complete"]
    for level in claimed:
        assert d["level_counts"][level]["pass"] > 0, level
    assert "unexercised_clauses" in d and "not_supported" in d


def test_the_readme_command_for_the_example_runs_verbatim() -> None:
    """The README's own line, `dla-conformance run --impl examples.third_party_adapter --report
    report.json`, run as written from the repository root (the report file is removed after)."""
    import re

    text = (ROOT / "README.md").read_text()
    (line,) = {m for m in re.findall(r"^dla-conformance run --impl examples\.third_party_adapter"
                                     r"[^\n]*$", text, flags=re.M)}
    report = ROOT / "report.json"
    existed = report.exists()
    try:
        argv = line.split("#")[0].split()
        argv[0] = _console()  # the same console script, by its full path
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "examples.third_party_adapter: PASSED" in result.stdout
    finally:
        if report.exists() and not existed:
            report.unlink()


def test_the_capacity_one_adapter_refuses_capacity_two_and_the_fenwick_one_dla(
        monkeypatch) -> None:
    """DLA-9.14: outside their claims the fla adapters refuse by name, and the claims level
    records it as not supported."""
    gla = _load(monkeypatch, "examples.fla_simple_gla")
    report = certify(gla, levels=["claims"])
    probes = {r.check: r.status for r in report.results}
    assert probes["unclaimed capacity = 2: forward"] == "not_supported"
    assert probes["unclaimed policy 'fenwick': forward"] == "not_supported"
    fenwick = _load(monkeypatch, "examples.fla_log_linear")
    report = certify(fenwick, levels=["claims"])
    probes = {r.check: r.status for r in report.results}
    assert probes["unclaimed policy 'dla': forward"] == "not_supported"
    assert probes["unclaimed foreign plan"] == "not_supported"
    assert probes["unclaimed T = 0"] == "not_supported"


def test_a_bug_in_the_example_kernel_is_caught(adapter, monkeypatch) -> None:
    kernel = adapter.my_masked_dla

    def without_decay(q, k, v, g, lam, *rest, **kw):
        return kernel(q, k, v, g.new_zeros(g.shape), lam, *rest, **kw)

    monkeypatch.setattr(adapter, "my_masked_dla", without_decay)
    report = certify(adapter, levels=["execute"], profile="ci")
    assert not report.passed
    assert "DLA-5.1" in report.failed_clauses()


def test_a_bug_in_the_fla_log_linear_adapter_is_caught(monkeypatch) -> None:
    """The fla adapter passes the scale through (fla's default is 1.0, DLA-4.3): dropping it
    is caught."""
    fenwick = _load(monkeypatch, "examples.fla_log_linear")
    naive = fenwick.naive_log_linear_attn

    def default_scale(*args, scale=None, **kw):
        return naive(*args, **kw)  # fla's own default scale, 1.0

    monkeypatch.setattr(fenwick, "naive_log_linear_attn", default_scale)
    report = certify(fenwick, levels=["execute"], dtype="float64")
    assert not report.passed and "DLA-4.3" in report.failed_clauses()


def test_the_gpu_adapter_loads_and_needs_cuda(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("certified on the GPU machine instead")
    result = subprocess.run([_console(), "run", "--impl", "examples.fla_chunk_log_linear"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no CUDA device" in result.stderr
