"""Every clause of spec/SPEC.md is cited by at least one test (scripts/clause_coverage.py).

The gate is checked on the real tree, and on made-up trees to show that it
can fail: a test citing nothing, a helper no test names, or a file that is not
a test file does not count.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "clause_coverage.py"
#: Clause ids in the made-up trees are written ``@3.4`` and expanded on writing, so that
#: this file itself cites no clause it does not check.
ID = "DLA-"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clause_coverage", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def cov() -> ModuleType:
    return _load()


def test_every_spec_clause_is_cited_by_a_test(cov: ModuleType) -> None:
    clauses = cov.spec_clauses()
    assert len(clauses) > 50 and {ID + "1.1", ID + "12.8"} <= set(clauses)
    cites = cov.citations()
    missing = [c for c in clauses if not cites.get(c)]
    assert not missing, f"clauses no test cites: {missing} (python scripts/clause_coverage.py)"


def _tree(root: Path, spec: str, files: dict[str, str]) -> Path:
    (root / "spec").mkdir()
    (root / "spec" / "SPEC.md").write_text(textwrap.dedent(spec).replace("@", ID))
    tests = root / "tests"
    tests.mkdir()
    for name, text in files.items():
        (tests / name).write_text(textwrap.dedent(text).replace("@", ID))
    return tests


FILES = {
    "test_cites.py": '''
        def test_merge():
            """@3.4: the oldest pair wins a tie."""
            assert True
        ''',
    "test_silent.py": '''
        TABLE = ["@5.2"]


        def helper():
            """@5.1, named by no test."""


        def test_nothing():
            assert 1 + 1 == 2


        def test_uses_table():
            assert TABLE
        ''',
    "helpers_not_a_test.py": '''
        def test_looks_like_a_test():
            """@2.1"""
        ''',
}
SPEC = """
    **@2.1 Key cosine.** ...

    **@3.4 Merge and tie-break.** ...

    **@5.1 GLA base.** ...

    **@5.2 Delta base.** ...
    """


def test_only_real_citations_count(cov: ModuleType, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A docstring citation and a named table count; silence, unnamed helpers and non-test
    files do not."""
    tests = _tree(tmp_path, SPEC, FILES)
    monkeypatch.setattr(cov, "ROOT", tmp_path)
    assert dict(cov.citations(tests)) == {
        ID + "3.4": {"tests/test_cites.py::test_merge"},
        ID + "5.2": {"tests/test_silent.py::test_uses_table"},
    }
    assert cov.spec_clauses() == [ID + c for c in ("2.1", "3.4", "5.1", "5.2")]


def test_missing_clauses_fail_the_gate(cov: ModuleType, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``--missing`` lists the uncited clauses and exits 1; the table marks them **none**."""
    _tree(tmp_path, SPEC, FILES)
    monkeypatch.setattr(cov, "ROOT", tmp_path)
    monkeypatch.setattr(cov.citations, "__defaults__", (tmp_path / "tests",))
    assert cov.main(["--missing"]) == 1
    assert capsys.readouterr().out.split() == [ID + "2.1", ID + "5.1"]
    assert cov.main([]) == 0
    table = capsys.readouterr().out
    assert f"| {ID}2.1 | **none** |" in table and f"| {ID}3.4 | test_merge |" in table
