"""The worked example and the figure of spec/SPEC.md come from the reference (Appendix A, B).

The worked example is regenerated with ``dla.reference`` and must equal both
``spec/worked_example.md`` and the block between the markers in SPEC.md, so
the spec cannot drift from the reference (it illustrates DLA-3.1 to DLA-3.5,
DLA-4.1, DLA-4.2, DLA-5.3, DLA-6.3).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec"


def _load_script() -> ModuleType:
    path = ROOT / "scripts" / "make_spec_assets.py"
    spec = importlib.util.spec_from_file_location("make_spec_assets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_spec_assets", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def example_text(script: ModuleType) -> str:
    return script.worked_example_text()


def test_worked_example_file_matches_the_reference(example_text: str) -> None:
    assert (SPEC / "worked_example.md").read_text() == example_text, (
        "spec/worked_example.md is stale: run python scripts/make_spec_assets.py")


def test_spec_block_matches_the_reference(script: ModuleType, example_text: str) -> None:
    spec_text = (SPEC / "SPEC.md").read_text()
    assert spec_text.count(script.BEGIN) == 1 and spec_text.count(script.END) == 1
    assert script.extract_block(spec_text) == example_text, (
        "the worked example inside spec/SPEC.md is stale: run python scripts/make_spec_assets.py")


def test_write_assets_round_trip(script: ModuleType, example_text: str, tmp_path: Path) -> None:
    """Writing into a copy of spec/ rewrites only the block and leaves the rest of SPEC.md."""
    original = (SPEC / "SPEC.md").read_text()
    emptied = script.replace_block(original, "")
    (tmp_path / "SPEC.md").write_text(emptied)
    script.write_assets(tmp_path, figure=False)
    assert (tmp_path / "worked_example.md").read_text() == example_text
    assert (tmp_path / "SPEC.md").read_text() == original
    assert script.main(["--check", "--spec-dir", str(tmp_path)]) == 0
    (tmp_path / "worked_example.md").write_text(example_text.replace("0.75", "0.7"))
    assert script.main(["--check", "--spec-dir", str(tmp_path)]) == 1


def test_worked_example_shows_the_decisions_the_brief_asks_for(example_text: str) -> None:
    """A boundary, a non-boundary, a merge and an exact tie resolved toward the older pair."""
    assert "| yes (" in example_text and "| no (" in example_text
    assert "costs (1.5, 2, 1.75): pair (0, 1); margin 0.25" in example_text
    assert "exact tie with pair (2, 3), the older pair wins; margin 0" in example_text
    assert "(DLA-4.2, DLA-9.11)" in example_text  # fenwick refuses C = 3 for T = 8


def test_number_format_is_stable(script: ModuleType) -> None:
    assert script.num(1.078125) == "1.078125"
    assert script.num(-1e-17) == "0"
    assert script.num(1.0) == "1"
    assert script.vec(np.array([0.25, -0.5])) == "(0.25, -0.5)"


def test_figure_script_writes_a_png(script: ModuleType, tmp_path: Path) -> None:
    out = script.make_figure(tmp_path / "partition.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # two full panels, not an empty canvas


def test_partition_image_marks_every_past_token(script: ModuleType) -> None:
    from dla import Config
    from dla.reference import make_plan

    scores = script.figure_scores()
    for policy in ("dla", "fenwick"):
        cfg = Config(capacity=script.FIG_CAPACITY, tau=script.TAU, score="external", policy=policy)
        img = script.partition_image(make_plan(cfg, scores=scores))
        T = img.shape[0]
        lower = np.tril(np.ones((T, T), bool))
        assert np.all(np.isfinite(img[lower])) and np.all(np.isnan(img[~lower]))
        assert np.all(img[np.arange(T), np.arange(T)] == 0)  # the newest token has label 0
