"""The Markdown certificate (``--certificate``): every field present, the result of the report,
the installed fixtures' checksum, and the implementation's commit or version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import types
from datetime import datetime, timezone
from pathlib import Path

import pytest

import dla
from dla.conformance import certificate, certify, cli
from dla.conformance.broken import BROKEN
from dla.conformance.golden import default_dir
from dla.conformance.report import Report


@pytest.fixture(scope="module")
def failing() -> Report:
    return certify(BROKEN["tie_break_newest_pair"][0], levels=["plan"], dtype="float64")


def _field(text: str, name: str) -> str:
    m = re.search(rf"^\| {re.escape(name)} \| (.*) \|$", text, flags=re.M)
    assert m, f"no {name!r} row in the certificate"
    return m.group(1)


def test_every_field_is_present_and_the_result_is_the_reports(failing: Report) -> None:
    date = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    text = certificate.render(failing, date=date)
    assert text.startswith(f"# DLA conformance certificate: {failing.implementation}")
    assert not failing.passed and not failing.complete
    assert "**Result: FAILED (partial run)**" in text and "DLA-3.4" in text
    assert _field(text, "result") == "FAILED (partial run)"
    assert _field(text, "implementation") == f"`{failing.implementation}`"
    assert _field(text, "implementation version")
    assert _field(text, "spec version") == dla.SPEC_VERSION
    assert _field(text, "suite version") == f"dla {dla.__version__}"
    assert _field(text, "profile, seed") == "ci, 0"
    assert _field(text, "date (UTC)").startswith("2025-01-02T03:04:05Z")
    digest = hashlib.sha256((default_dir() / "index.json").read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in _field(text, "fixtures checksum")
    for key in failing.claims.to_json():
        assert re.search(rf"^\| {key} \| ", text, flags=re.M), key
    n = failing.level_counts()["plan"]
    row = f"| plan | float64 | cpu | {n['run']} | {n['pass']} | {n['fail']} | " \
          f"{n['not_supported']} | {n['works_unclaimed']} | FAIL |"
    assert row in text
    assert f"Clauses not exercised ({len(failing.unexercised_clauses())})" in text
    for regime in failing.regimes():
        assert regime in text
    assert f"```bash\n{failing.reproduce()}\n```" in text


def test_a_passing_complete_run_says_passed(failing: Report) -> None:
    data = failing.to_json()
    data["results"] = [r for r in data["results"] if r["status"] != "fail"]
    data["complete"] = True
    passing = Report.from_json(data)
    assert passing.passed
    text = certificate.render(passing)
    assert "**Result: PASSED**, complete" in text and _field(text, "result") == "PASSED"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_implementation_in_a_git_work_tree_gives_its_commit(tmp_path: Path,
                                                            failing: Report) -> None:
    repo = tmp_path / "kernel"
    (repo / "pkg").mkdir(parents=True)
    origin = repo / "pkg" / "adapter.py"
    origin.write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "pkg/adapter.py")
    _git(repo, "commit", "-q", "-m", "adapter")
    report = dataclasses.replace(failing, origin=str(origin), implementation_version=None)
    v = certificate.implementation_version(report)
    assert (v.kind, v.value, v.dirty, v.path) == ("git", _git(repo, "rev-parse", "HEAD"), False,
                                                  "pkg/adapter.py")
    text = certificate.render(report)
    assert _field(text, "implementation version") == f"git commit {v.value} (clean)"
    assert _field(text, "origin") == "`pkg/adapter.py`"
    origin.write_text("x = 2\n")
    assert certificate.implementation_version(report).dirty


def test_outside_git_the_package_version_or_unknown(tmp_path: Path, failing: Report) -> None:
    loose = tmp_path / "adapter.py"
    loose.write_text("")
    as_pytest = dataclasses.replace(failing, origin=str(loose), implementation="pytest:impl")
    v = certificate.implementation_version(as_pytest)
    assert (v.kind, v.value) == ("package", f"pytest {pytest.__version__}")
    nowhere = dataclasses.replace(failing, origin=None, implementation="no_such_module_xyz")
    assert certificate.implementation_version(nowhere).text() == "unknown"


def test_cli_writes_the_certificate_from_run_and_from_the_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("dla_test_cert_broken")
    mod.impl = BROKEN["tie_break_newest_pair"][0]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    saved, cert, again = tmp_path / "r.json", tmp_path / "CERT.md", tmp_path / "c" / "CERT.md"
    assert cli.main(["run", "--impl", f"{mod.__name__}:impl", "--levels", "plan", "--dtype",
                     "float64", "--report", str(saved), "--certificate", str(cert)]) == 1
    assert cli.main(["report", str(saved), "--certificate", str(again)]) == 1
    first, second = cert.read_text(), again.read_text()
    assert "(end of the run)" in _field(first, "date (UTC)")
    assert "(of the run, from the report)" in _field(second, "date (UTC)")
    recorded = json.loads(saved.read_text())
    assert recorded["date"] and recorded["implementation_version"]
    # the commit and the date were recorded at the end of the run, so both certificates agree
    assert _field(first, "implementation version") == _field(second, "implementation version")
    drop = re.compile(r"^\| date \(UTC\) \|.*$", flags=re.M)
    assert drop.sub("", first) == drop.sub("", second)
    assert _field(first, "result") == "FAILED (partial run)"
    assert json.loads(saved.read_text())["passed"] is False


def test_a_report_without_a_date_says_which_date_the_certificate_shows(
        tmp_path: Path, failing: Report) -> None:
    """Reports written before the run date was recorded: the file's time, and the note says so."""
    data = failing.to_json()
    data.pop("date")
    saved = tmp_path / "old.json"
    saved.write_text(json.dumps(data, default=str))
    cert = tmp_path / "CERT.md"
    cli.main(["report", str(saved), "--certificate", str(cert)])
    assert "the report records no date" in _field(cert.read_text(), "date (UTC)")
