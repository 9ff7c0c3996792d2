"""The HTML report (``--html``, ``dla-conformance report``): one self-contained, well-formed page
with the certificate first and a picture per failure that marks the right readout."""

from __future__ import annotations

import base64
import io
import json
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from dla.conformance import certify, cli, html_report
from dla.conformance.broken import BROKEN
from dla.conformance.report import FAIL, Report

pytest.importorskip("matplotlib")

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base"}


class PageChecker(HTMLParser):
    """Balance of every element opened, references, and the images with their section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []  # (tag, id of a <section>)
        self.problems: list[str] = []
        self.images: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            ref = a.get(key)
            if ref is not None and not (ref.startswith("data:") or ref.startswith("#")):
                self.problems.append(f"external {key}={ref[:60]!r} in <{tag}>")
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.problems.append(f"<{tag}> in a self-contained page")
        if tag == "img":
            section = next((sid for t, sid in reversed(self.stack) if t == "section" and sid
                            and sid.startswith("result-")), None)
            self.images.append({**a, "section": section})
        if tag not in VOID:
            self.stack.append((tag, a.get("id")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_tags = [t for t, _ in self.stack[-3:]]
            self.problems.append(f"</{tag}> closes {open_tags}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_page(text: str) -> PageChecker:
    """Parse ``text``; assert it is balanced, self-contained, and every image decodes."""
    from matplotlib.image import imread

    assert text.startswith("<!DOCTYPE html>")
    p = PageChecker()
    p.feed(text)
    p.close()
    assert not p.problems, p.problems[:5]
    assert not p.stack, f"unclosed: {p.stack}"
    assert "url(" not in text and "@import" not in text  # no external CSS resources
    for img in p.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        pixels = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)),
                        format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
        assert img.get("alt")
    return p


def _result_of(report: Report, section: str | None) -> Any:
    assert section is not None and section.startswith("result-")
    return report.results[int(section.removeprefix("result-"))]


@pytest.fixture(scope="module")
def wrong_position() -> Report:
    """One output entry off (DLA-5.x), execute level only: output failures."""
    return certify(BROKEN["one_wrong_position"][0], levels=["execute"], dtype="float64")


@pytest.fixture(scope="module")
def tie_break() -> Report:
    """Ties merged to the newest pair (DLA-3.4), plan level only: plan failures."""
    return certify(BROKEN["tie_break_newest_pair"][0], levels=["plan"], dtype="float64")


def test_output_failures_mark_the_earliest_failing_readout(wrong_position: Report) -> None:
    report = wrong_position
    failed = [r for r in report.results if r.status == FAIL]
    assert failed and not report.passed
    text = html_report.render(report, max_figures=5)  # 5 failures drawn: enough, and fast
    page = check_page(text)
    ratio = [i for i in page.images if i.get("data-kind") == "output-ratio"]
    heat = [i for i in page.images if i.get("data-kind") == "output-heatmap"]
    assert len(ratio) == 5 and len(heat) == 5
    for img in ratio:
        r = _result_of(report, img["section"])
        assert r.status == FAIL and r.worst["field"] == "o"
        assert int(img["data-first-failing"]) == r.worst["first"][1]
    # the certificate comes first, then every failure, each with the command that repeats it
    assert text.index('id="certificate"') < text.index('id="failures"')
    assert text.count('<section class="failure"') == len(failed)
    assert "pictures are drawn for the first 5 failures" in text.lower()
    body = " ".join(page.text)
    for key in report.claims.to_json():
        assert key in body
    assert report.reproduce() in body
    assert "not a certificate of the whole claims" in body
    assert "--levels execute --dtype float64 --device cpu" in body
    for clause in report.failed_clauses():
        assert clause in body


def test_the_figure_marks_the_readout_it_is_given() -> None:
    """The marked readout is ``first[1]``, not the worst one, and the profile decides nothing."""
    ratios = [0.0] * 100
    ratios[21], ratios[70] = 3.0, 500.0
    worst = {"field": "o", "first": [0, 21, 1], "where": [0, 70, 0], "ratio_by_readout": ratios,
             "ratio_by_readout_head": {"batch_row": 0, "rows": [ratios, ratios[::-1]]}}
    png, marked, caption = html_report.output_ratio_figure(worst, "synthetic")
    assert marked == 21 and png.startswith(b"\x89PNG") and "every 64" in caption
    heat = html_report.output_heatmap_figure(worst, "synthetic")
    assert heat is not None and "(0, 21, 1)" in heat[1]


def test_plan_failures_show_both_partitions_and_the_decision(tie_break: Report) -> None:
    report = tie_break
    failed = [r for r in report.results if r.status == FAIL]
    assert failed and all(r.target == "DLA-3.4" for r in failed)
    text = html_report.render(report)
    page = check_page(text)
    plans = [i for i in page.images if i.get("data-kind") == "plan"]
    assert len(plans) == sum(1 for r in failed if r.worst and "plan_row" in r.worst) > 0
    for img in plans:
        r = _result_of(report, img["section"])
        assert int(img["data-first-differing"]) == r.worst["plan_row"]["t"] == r.worst["first"][1]
    body = " ".join(page.text)
    first = next(r for r in failed if r.worst and r.worst.get("context"))
    assert first.worst["context"] in body  # the reference's decision, printed below
    assert "the oldest wins (DLA-3.4)" in body
    assert "expected: [" in body and "actual:   [" in body


def test_error_rules_show_expected_against_raised(tie_break: Report) -> None:
    data = tie_break.to_json()
    detail = ("raised IndexError: index 5 is out of bounds; expected ValueError; the message "
              "must start with the argument 'v' (DLA-9.13)")
    data["results"].append({"level": "properties", "clause": "DLA-9.1, DLA-12.8",
                            "check": "invalid v_wrong_length", "passed": False, "detail": detail,
                            "worst": {"field": "error", "message": detail}, "dtype": "float64",
                            "device": "cpu", "status": "fail"})
    data["levels"] = [*data["levels"], "properties"]
    report = Report.from_json(data)
    parsed = html_report.parse_error_detail(detail)
    assert parsed["raised"] == "IndexError" and parsed["expected"] == "ValueError"
    assert parsed["message"] == "index 5 is out of bounds" and parsed["argument"] == "'v'"
    assert html_report.parse_error_detail("no error raised; expected TypeError")["expected"] == \
        "TypeError"
    page = check_page(html_report.render(report, max_figures=0))
    body = " ".join(page.text)
    assert "Error rule" in body and "IndexError" in body and "ValueError whose message" in body
    assert "--levels properties --dtype float64 --device cpu" in body


def test_check_command_replaces_the_restrictions() -> None:
    report = Report.from_json({**_minimal(), "reproduce": (
        "PYTHONPATH='/a b' dla-conformance run --impl x --levels plan execute --dtype float32 "
        "--device cpu --profile ci --seed 3")})
    r = types.SimpleNamespace(level="execute", dtype="float64", device="cuda")
    cmd = html_report.check_command(report, r)  # type: ignore[arg-type]
    assert cmd == ("PYTHONPATH='/a b' dla-conformance run --impl x --levels execute --dtype "
                   "float64 --device cuda --profile ci --seed 3")


def _minimal() -> dict[str, Any]:
    return {"implementation": "x", "claims": {}, "levels": [], "dtypes": [], "devices": [],
            "profile": "ci", "seed": 0, "results": []}


@pytest.fixture
def tie_break_module(monkeypatch: pytest.MonkeyPatch) -> str:
    mod = types.ModuleType("dla_test_html_broken")
    mod.impl = BROKEN["tie_break_newest_pair"][0]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return f"{mod.__name__}:impl"


def test_report_subcommand_writes_the_same_page(tmp_path: Path, tie_break_module: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    saved, first, again = tmp_path / "r.json", tmp_path / "run.html", tmp_path / "out" / "r.html"
    code = cli.main(["run", "--impl", tie_break_module, "--levels", "plan", "--dtype", "float64",
                     "--report", str(saved), "--html", str(first)])
    assert code == 1
    assert f"HTML report written to {first}" in capsys.readouterr().out
    assert cli.main(["report", str(saved), "--html", str(again)]) == 1
    assert again.read_bytes() == first.read_bytes()
    check_page(again.read_text())
    assert json.loads(saved.read_text())["passed"] is False


def test_html_without_matplotlib_exits_2_with_the_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({**_minimal(), "format": "dla-conformance-report/2"}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "r.html"
    for argv in (["run", "--impl", "reference", "--levels", "plan", "--html", str(out)],
                 ["report", str(saved), "--html", str(out)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert 'pip install "dla-spec[plot]"' in err and "pip install matplotlib" in err
        assert not out.exists()


def test_text_json_and_certificate_never_import_matplotlib(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it would raise
    saved, cert = tmp_path / "r.json", tmp_path / "CERT.md"
    argv = ["run", "--impl", "reference", "--levels", "plan", "--dtype", "float64",
            "--report", str(saved), "--certificate", str(cert)]
    assert cli.main(argv) == 0
    assert cli.main(["report", str(saved), "--certificate", str(cert)]) == 0
    report = Report.from_json(json.loads(saved.read_text()))
    assert "No check failed" in html_report.render(report)  # nothing to draw: no matplotlib
