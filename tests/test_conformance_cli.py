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
        ["run"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


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

    fake = types.SimpleNamespace(verify=verify, generate=generate)
    monkeypatch.setitem(sys.modules, "dla.conformance.golden", fake)
    assert cli.main(["fixtures", "verify", "--dir", "/tmp/fx"]) == 1
    assert "1 case differs" in capsys.readouterr().out
    assert cli.main(["fixtures", "generate", "--out", "/tmp/fx2"]) == 0
    assert "wrote 2 files" in capsys.readouterr().out
    assert calls == [Path("/tmp/fx"), Path("/tmp/fx2")]


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
