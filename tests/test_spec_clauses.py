"""Clause ids of spec/SPEC.md: well-formed, unique, in order, and every citation resolves.

Code, tests, fixtures and reports cite clause ids (``DLA-3.4``) and sections
(``DLA-7``); a citation of a clause that does not exist is a defect and fails
here. The spec's tolerance table must equal dla/conformance/tolerance.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec" / "SPEC.md"

#: A clause definition: a bold id at the start of a line, e.g. ``**DLA-3.4 Merge and tie-break.**``.
DEFINITION = re.compile(r"^\*\*(DLA-\S+?)[ *]", re.MULTILINE)
WELL_FORMED = re.compile(r"^DLA-([1-9][0-9]*)\.([1-9][0-9]*)$")
#: A citation: ``DLA-3.4`` or a whole section ``DLA-7`` (``DLA-v1`` is the version, not a clause).
CITATION = re.compile(r"\bDLA-([0-9]+)(?:\.([0-9]+))?\b")
#: Clause ids that existed before the spec was written out; they must never disappear.
ORIGINAL_IDS = (
    [f"DLA-1.{i}" for i in range(1, 5)] + [f"DLA-2.{i}" for i in range(1, 5)]
    + [f"DLA-3.{i}" for i in range(1, 7)] + [f"DLA-4.{i}" for i in range(1, 4)]
    + [f"DLA-5.{i}" for i in range(1, 6)] + [f"DLA-6.{i}" for i in range(1, 4)]
    + [f"DLA-7.{i}" for i in range(1, 3)] + [f"DLA-8.{i}" for i in range(1, 2)]
    + [f"DLA-9.{i}" for i in range(1, 13)] + [f"DLA-10.{i}" for i in range(1, 4)]
    + [f"DLA-11.{i}" for i in range(1, 3)]
)  # built with f-strings so that the tests using this list do not count as citing each clause


def defined_ids(text: str) -> list[str]:
    return DEFINITION.findall(text)


def sort_key(clause: str) -> tuple[int, int]:
    m = WELL_FORMED.match(clause)
    assert m, f"malformed clause id {clause!r}"
    return int(m.group(1)), int(m.group(2))


def unresolved(text: str, clauses: set[str]) -> list[str]:
    """Citations in ``text`` of clauses or sections that SPEC.md does not define."""
    sections = {c.split(".")[0] for c in clauses}
    bad = []
    for m in CITATION.finditer(text):
        major, minor = m.group(1), m.group(2)
        if minor is None:
            if f"DLA-{major}" not in sections:
                bad.append(m.group(0))
        elif f"DLA-{major}.{minor}" not in clauses:
            bad.append(m.group(0))
    return bad


@pytest.fixture(scope="module")
def spec_text() -> str:
    return SPEC.read_text()


@pytest.fixture(scope="module")
def clauses(spec_text: str) -> set[str]:
    return set(defined_ids(spec_text))


def test_ids_are_well_formed(spec_text: str) -> None:
    ids = defined_ids(spec_text)
    assert len(ids) >= len(ORIGINAL_IDS)
    bad = [c for c in ids if not WELL_FORMED.match(c)]
    assert not bad, f"malformed clause ids: {bad}"


def test_ids_are_unique_and_in_order(spec_text: str) -> None:
    ids = defined_ids(spec_text)
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    assert not duplicates, f"duplicate clause ids: {duplicates}"
    keys = [sort_key(c) for c in ids]
    assert keys == sorted(keys), "clauses must appear in order of their ids"
    sections = sorted({s for s, _ in keys})
    assert sections == list(range(1, len(sections) + 1)), f"sections must be 1..n, got {sections}"
    for s in sections:
        numbers = [n for sec, n in keys if sec == s]
        assert numbers == list(range(1, len(numbers) + 1)), f"section {s} has gaps: {numbers}"


def test_original_ids_are_kept(clauses: set[str]) -> None:
    missing = [c for c in ORIGINAL_IDS if c not in clauses]
    assert not missing, f"clause ids may be added but never removed: {missing}"


def test_spec_citations_resolve(spec_text: str, clauses: set[str]) -> None:
    assert not unresolved(spec_text, clauses)


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if ".venv" not in p.parts)


def _citation_failures(files: list[Path], clauses: set[str]) -> dict[str, list[str]]:
    out = {}
    for p in files:
        bad = unresolved(p.read_text(encoding="utf-8"), clauses)
        if bad:
            out[str(p.relative_to(ROOT))] = sorted(set(bad))
    return out


def test_reference_citations_resolve(clauses: set[str]) -> None:
    """Every clause cited in the reference and the shared types (docstrings, messages) exists."""
    files = _python_files("reference", "dla")
    assert any(p.name == "policies.py" for p in files)
    assert not _citation_failures(files, clauses)


def test_citations_elsewhere_resolve(clauses: set[str]) -> None:
    """The same for the conformance engine, implementations, fixtures code, scripts and tests."""
    files = _python_files("conformance", "impls", "fixtures", "scripts", "tests", "benchmarks")
    assert not _citation_failures(files, clauses)


def test_a_wrong_citation_is_caught(clauses: set[str]) -> None:
    wrong_clause, wrong_section = "DLA-" + "3.99", "DLA-" + "42"  # built so this file cites neither
    good = "DLA-" + "9.5"  # an existing clause, built so this test does not count as citing it
    text = f'raise ValueError("g: <= 0 ({good})")  # see {wrong_clause} and {wrong_section}'
    assert unresolved(text, clauses) == [wrong_clause, wrong_section]
    assert unresolved(f"spec DLA-v1, clause {good}, section DLA-{'11'}", clauses) == []


def _exp(x: float) -> str:
    return f"{x:.0e}"


def test_tolerance_table_equals_the_tolerance_module(spec_text: str) -> None:
    """DLA-10.1: the table in the spec is the one the conformance engine uses."""
    from dla.conformance import tolerance as tol

    for dtype, t in tol.TOLERANCES.items():
        grad = tol.GRADIENT_RMS.get(dtype)
        row = (f"| {dtype} | {_exp(t.rms)} | {_exp(t.rtol)} | {_exp(t.atol)} | "
               f"{'n/a' if grad is None else _exp(grad)} | {_exp(tol.MARGIN_BOUND[dtype])} |")
        assert row in spec_text, f"DLA-10.1 table row differs from tolerance.py: expected {row}"


def test_the_installed_clause_catalogue_matches_the_spec(spec_text: str) -> None:
    """conformance/clauses.py (shipped with the package, which does not ship SPEC.md) lists
    every clause of the spec with its title, in order; regenerate it with
    ``python scripts/clause_catalogue.py``."""
    import importlib.util

    from dla.conformance.clauses import CLAUSES, clause_key

    path = ROOT / "scripts" / "clause_catalogue.py"
    spec = importlib.util.spec_from_file_location("clause_catalogue", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert CLAUSES == mod.catalogue(spec_text)
    assert list(CLAUSES) == defined_ids(spec_text)
    assert sorted(CLAUSES, key=clause_key) == list(CLAUSES)
