"""The dla-conformance command line: exit codes, the table and the JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import dla.reference as ref
from dla.conformance import cli


@pytest.fixture
def broken_module(monkeypatch: pytest.MonkeyPatch) -> str:
    """'module:attribute' of the reference with outputs 1 % too large."""
    mod = types.ModuleType("dla_test_cli_broken")

    def forward(*args, **kw):
        o, c = ref.forward(*args, **kw)
        return o * 1.01, c

    mod.impl = types.SimpleNamespace(  # type: ignore[attr-defined]
        forward=forward, make_plan=ref.make_plan, CLAIMS={**ref.CLAIMS, "levels": ("execute",)}
    )
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return "dla_test_cli_broken:impl"


def test_run_passes_with_exit_0_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "report.json"
    code = cli.main(
        [
            "run",
            "--impl",
            "reference",
            "--levels",
            "plan",
            "execute",
            "--dtype",
            "float32",
            "--seed",
            "7",
            "--report",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "level" in text and "clause" in text and "PASS" in text and "PASSED" in text
    d = json.loads(out.read_text())
    for key in (
        "format",
        "implementation",
        "passed",
        "claims",
        "levels",
        "level_passed",
        "dtypes",
        "devices",
        "profile",
        "seed",
        "reproduce",
        "versions",
        "duration_s",
        "failed_clauses",
        "worst_errors",
        "results",
    ):
        assert key in d, key
    assert d["passed"] is True and d["implementation"] == "reference"
    assert d["levels"] == ["plan", "execute"] and d["dtypes"] == ["float32"]
    assert d["seed"] == 7 and d["profile"] == "ci" and d["failed_clauses"] == []
    assert {"python", "numpy", "torch", "triton", "dla"} <= set(d["versions"])
    r = d["results"][0]
    assert set(r) >= {"level", "clause", "check", "passed", "detail", "worst", "dtype", "device"}
    assert d["worst_errors"]["execute"]["field"] == "o"


def test_run_fails_with_exit_1_and_names_the_clause(
    broken_module: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "r.json"
    code = cli.main(
        [
            "run",
            "--impl",
            broken_module,
            "--dtype",
            "float64",
            "--levels",
            "execute",
            "--report",
            str(out),
            "--only-failures",
        ]
    )
    assert code == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "DLA-5.1" in text
    d = json.loads(out.read_text())
    assert d["passed"] is False and "DLA-5.1" in d["failed_clauses"]
    assert d["level_passed"] == {"execute": False}
    assert d["worst_errors"]["execute"]["ratio"] > 1
    assert all(np.isfinite(w) for w in d["worst_errors"]["execute"]["where"])


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--impl", "no_such_impl"],
        ["run", "--impl", "reference", "--levels", "speed"],
        ["run", "--impl", "reference", "--profile", "weekly"],
        ["run", "--impl", "reference", "--dtype", "int8"],
        ["run", "--impl", "reference", "--dtype", "bfloat16"],  # not claimed: refused
        ["run", "--impl", "torch_cpu", "--dtype", "float16"],
        ["run", "--impl", "torch_cpu", "--device", "cuda"],  # not claimed
        ["run"],
        ["frobnicate"],
        ["fixtures", "generate"],  # never into the installed package unless told to
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_an_unclaimed_dtype_is_one_line_exit_2(capsys) -> None:
    """DLA-11.2, DLA-12.12: a dtype asked for outside the claims is not certified (it used to
    run and print PASSED); the message names the claims and is one line."""
    assert cli.main(["run", "--impl", "torch_cpu", "--dtype", "float16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not claim ['float16']" in err and "CLAIMS['dtypes']" in err


def test_a_missing_device_is_one_line_exit_2_with_the_interpreter_hint(capsys) -> None:
    """Environment checks run before any case: no CUDA means one line, not hundreds of FAILs."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    mod = types.SimpleNamespace(forward=ref.forward, make_plan=ref.make_plan,
                                CLAIMS={"devices": ("cuda",), "array": "torch"},
                                __name__="my_triton_kernels")
    sys.modules["my_triton_kernels"] = mod  # type: ignore[assignment]
    try:
        code = cli.main(["run", "--impl", "my_triton_kernels"])
    finally:
        sys.modules.pop("my_triton_kernels")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "no CUDA device" in err and "TRITON_INTERPRET=1" in err and "--device cpu" in err


def test_repeated_dtypes_run_once() -> None:
    from dla.conformance import certify

    report = certify("reference", levels=["plan"], dtype=["float32", "float32"])
    assert report.dtypes == ["float32"]
    names = [r.check for r in report.results]
    assert len(names) == len(set(names))


def test_the_report_sorts_clauses_numerically_and_keeps_them_whole(
    broken_module: str, tmp_path: Path, capsys
) -> None:
    """DLA-12.12: failed clauses in spec order (DLA-5.x before DLA-10.x), never cut; each
    failure printed once with its detail; reproduce repeats every argument."""
    out = tmp_path / "r.json"
    assert cli.main(["run", "--impl", broken_module, "--dtype", "float64", "--levels",
                     "execute", "golden", "--device", "cpu", "--report", str(out)]) == 1
    text = capsys.readouterr().out
    d = json.loads(out.read_text())
    from dla.conformance.clauses import clause_key

    assert d["failed_clauses"] == sorted(d["failed_clauses"], key=clause_key)
    assert all(r["clause"].count("+") == 0 for r in d["results"])  # never abbreviated
    failed = [r for r in d["results"] if not r["passed"]]
    assert failed
    first = failed[0]
    assert text.count(first["detail"]) == 1  # one place for each failure's detail
    assert "--dtype float64" in d["reproduce"] and "--device cpu" in d["reproduce"]
    assert "--levels execute golden" in d["reproduce"] and "--seed 0" in d["reproduce"]


def test_a_numeric_failure_reports_earliest_and_worst_readouts_with_values(
    tmp_path: Path,
) -> None:
    """A wrong output names the earliest failing readout and the worst one, with the row
    (b, h) and the got / expected values at both."""
    mod = types.ModuleType("dla_test_cli_late_drift")

    def forward(*args, **kw):
        o, c = ref.forward(*args, **kw)
        o = o.copy()
        if o.shape[1] > 20:
            o[:, 20:] *= 1.0 + 1e-3 * np.arange(o.shape[1] - 20)[None, :, None, None]
        return o, c

    mod.impl = types.SimpleNamespace(  # type: ignore[attr-defined]
        forward=forward, make_plan=ref.make_plan, CLAIMS={**ref.CLAIMS, "levels": ("execute",)})
    sys.modules[mod.__name__] = mod
    try:
        out = tmp_path / "r.json"
        cli.main(["run", "--impl", "dla_test_cli_late_drift:impl", "--dtype", "float64",
                  "--levels", "execute", "--report", str(out)])
    finally:
        sys.modules.pop(mod.__name__)
    bad = [r for r in json.loads(out.read_text())["results"]
           if not r["passed"] and r["worst"] and r["worst"]["field"] == "o"]
    assert bad
    w = bad[0]["worst"]
    assert w["first"][1] == 21 and w["where"][1] > w["first"][1]  # t: earliest vs worst
    assert len(w["first_got"]) == len(w["first_expected"]) >= 1
    assert w["first_got"] != w["first_expected"]
    assert "earliest failing at" in bad[0]["detail"]


def test_list_shows_registered_implementations_and_claims(capsys) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "reference (dla.reference)" in out
    assert "levels: plan, execute, end_to_end" in out


def test_fixtures_verify_calls_the_golden_module(monkeypatch, capsys) -> None:
    calls: list[Path] = []

    class _Verified:
        ok = False

        def __str__(self) -> str:
            return "1 case differs"

    def verify(d: Path) -> _Verified:
        calls.append(d)
        return _Verified()

    def generate(d: Path) -> list[Path]:
        calls.append(d)
        return [Path("a"), Path("b")]

    fake = types.SimpleNamespace(verify=verify, generate=generate,
                                 default_dir=lambda: Path("/installed/fixtures"))
    monkeypatch.setitem(sys.modules, "dla.conformance.golden", fake)
    assert cli.main(["fixtures", "verify", "--dir", "/tmp/fx"]) == 1
    assert "1 case differs" in capsys.readouterr().out
    assert cli.main(["fixtures", "generate", "--out", "/tmp/fx2"]) == 0
    assert "wrote 2 files" in capsys.readouterr().out
    assert cli.main(["fixtures", "generate"]) == 2  # refuses to guess: --out or --in-place
    assert cli.main(["fixtures", "generate", "--in-place"]) == 0
    assert calls == [Path("/tmp/fx"), Path("/tmp/fx2"), Path("/installed/fixtures")]


def test_fixtures_without_the_golden_module_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "dla.conformance.golden", None)
    assert cli.main(["fixtures", "verify"]) == 2
    assert "dla.conformance.golden" in capsys.readouterr().err


def test_python_dash_m_runs_in_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dla.conformance",
            "run",
            "--impl",
            "reference",
            "--levels",
            "plan",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reference: PASSED" in proc.stdout
    assert json.loads(out.read_text())["levels"] == ["plan"]
