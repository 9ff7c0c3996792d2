"""The property checks of the conformance suite (``dla.conformance.properties``).

They hold for the reference, and each fails, with the clause it certifies,
on a broken implementation whose bug breaks that property; a failure names
a falsifying case that reproduces it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from dla.conformance.adapter import Adapter
from dla.conformance.broken import BROKEN, Broken
from dla.conformance.properties import (
    PROPERTIES,
    Case,
    Violation,
    applicable,
    property_checks,
    run_property,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

#: Broken variant -> the clause of the property that must catch it.
CAUGHT_BY: dict[str, str] = {
    "future_query": "DLA-5.3",
    "read_before_merge": "DLA-3.6",
    "tie_break_newest_pair": "DLA-3.4",
    "merge_forgets_information": "DLA-3.4",
    "boundary_at_equality": "DLA-3.1",
    "labels_from_oldest": "DLA-3.5",
    "fenwick_level_off_by_one": "DLA-4.1",
    "oldest_state_not_decayed": "DLA-5.5",
    "delta_write_without_beta": "DLA-5.5",
    "default_scale_inverse_k": "DLA-5.5",
    "one_wrong_position": "DLA-1.1",
    "ignores_initial_cache": "DLA-7.2",
    "varlen_leak": "DLA-8.1",
}


def _failed(results: list) -> set[str]:
    return {r.clause for r in results if not r.passed}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_satisfies_every_property(dtype: str) -> None:
    """DLA-12.8: the reference satisfies every property check."""
    results = property_checks(Adapter("reference", dtype=dtype), profile="ci", seed=0)
    assert [r.check for r in results] == [p.check for p in PROPERTIES]  # streaming, varlen claimed
    assert all(r.passed for r in results), [r.detail for r in results if not r.passed]
    assert all(r.level == "properties" and r.dtype == dtype for r in results)


@pytest.mark.parametrize("name", ["future_query", "read_before_merge"])
def test_property_checks_fail_causality_and_capacity_bugs(name: str) -> None:
    """The full run: causality (DLA-5.3) and capacity (DLA-3.6) bugs are caught."""
    results = property_checks(Adapter(BROKEN[name][0]), profile="ci", seed=0)
    failed = [r for r in results if not r.passed]
    assert CAUGHT_BY[name] in {r.clause for r in failed}
    assert all("falsifying example: Case(" in r.detail for r in failed)


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_property_catches_its_broken_variant(name: str) -> None:
    """DLA-12.8: each property fails a variant that breaks the clause it certifies."""
    clause = CAUGHT_BY[name]
    adapter = Adapter(BROKEN[name][0])
    props = [p for p in applicable(adapter) if p.clause == clause]
    assert props, f"no applicable property certifies {clause} for {name}"
    results = [run_property(p, adapter, "ci", 0) for p in props]
    assert not all(r.passed for r in results), f"{clause} properties missed {name}"
    assert not any(r.detail.startswith("raised") for r in results if not r.passed)


def _clauses_listed_in_12_8() -> set[str]:
    """The clause ids the text of DLA-12.8 in spec/SPEC.md names, except the golden level's."""
    spec = (Path(__file__).resolve().parents[1] / "spec" / "SPEC.md").read_text()
    start = spec.index("**DLA-12.8 ")
    text = spec[start : spec.index("\n\n", start)]
    return set(re.findall(r"DLA-\d+\.\d+", text)) - {"DLA-12." + n for n in "78"}


def test_the_properties_are_those_the_clause_lists() -> None:
    """DLA-12.8: causality, invariants, labels, dyadic boundaries and merges, conservation,
    row independence, and (where claimed) stream splits and packing, read from the clause.
    An implementation claiming only execute and end_to_end still gets every other property."""
    listed = _clauses_listed_in_12_8()
    assert len(listed) >= 10
    assert {p.clause for p in PROPERTIES} == listed
    assert {p.clause for p in applicable(Adapter("reference"))} == listed
    minimal = Adapter(BROKEN["future_query"][0])  # claims execute and end_to_end only
    # all but stream splits and packing (see test_streaming_and_varlen_properties_follow_...)
    assert len(listed - {p.clause for p in applicable(minimal)}) == 2


def _falsifying_case(detail: str) -> Case:
    text = detail.split("falsifying example: ", 1)[1]
    return eval(text[: text.index(")") + 1], {"Case": Case})  # the repr of a frozen dataclass


def test_failure_is_reproducible_from_its_detail() -> None:
    """Same seed, same report; the printed case fails again when run on its own."""
    adapter = Adapter(BROKEN["tie_break_newest_pair"][0])
    prop = next(p for p in PROPERTIES if p.clause == "DLA-3.4")
    first, second = (run_property(prop, adapter, "ci", 7) for _ in range(2))
    assert not first.passed and first.detail == second.detail
    case = _falsifying_case(first.detail)
    with pytest.raises(Violation):
        prop.fn(adapter, case)
    prop.fn(Adapter("reference"), case)  # the reference passes the very same case


def test_only_claimed_bases_are_drawn() -> None:
    """A bug in the delta base is invisible to an implementation that claims only gla."""
    delta_only = BROKEN["delta_write_without_beta"][0]
    gla_only = Broken("gla_only", delta_only.CLAIMS["levels"], bases=("gla",),
                      patches=delta_only._patches)
    assert not all(r.passed for r in property_checks(Adapter(delta_only), profile="ci"))
    assert all(r.passed for r in property_checks(Adapter(gla_only), profile="ci"))


def test_streaming_and_varlen_properties_follow_the_claims() -> None:
    adapter = Adapter(BROKEN["future_query"][0])  # claims execute and end_to_end only
    clauses = {p.clause for p in applicable(adapter)}
    assert "DLA-7.2" not in clauses and "DLA-8.1" not in clauses
    assert {"DLA-7.2", "DLA-8.1"} <= {p.clause for p in applicable(Adapter("reference"))}


class _Raises:
    """An implementation whose ``forward`` always raises."""

    CLAIMS: ClassVar[dict[str, object]] = {
        "levels": ("end_to_end",), "dtypes": ("float64",), "array": "numpy"}

    @staticmethod
    def forward(*args: object, **kw: object) -> None:
        raise NotImplementedError("forward is not written yet")

    @staticmethod
    def make_plan(config: object, **kw: object) -> object:
        from dla import reference

        return reference.make_plan(config, **kw)


def test_an_implementation_that_raises_fails_with_its_message() -> None:
    results = {r.check: r for r in property_checks(Adapter(_Raises()), profile="ci")}
    conservation = results["conservation: lam = 1 gives the base model"]
    assert not conservation.passed
    assert "raised NotImplementedError: forward is not written yet" in conservation.detail
    assert results["capacity: 1 <= count <= C"].passed  # the plan is the reference's


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="profile"):
        property_checks(Adapter("reference"), profile="fast")


def test_cases_cover_chunk_boundaries_and_both_policies() -> None:
    """The drawn cases reach the lengths around 16 and 64 and both policies and bases."""
    seen: list[Case] = []
    prop = next(p for p in PROPERTIES if p.clause == "DLA-5.5")
    spy = type(prop)(prop.clause, prop.check, lambda a, c: seen.append(c))
    run_property(spy, Adapter("reference"), "thorough", 0)
    assert {c.T for c in seen} >= {15, 16, 17, 63, 64, 65}
    assert {c.policy for c in seen} == {"dla", "fenwick"}
    assert {c.base for c in seen} == {"gla", "delta"}
    assert all(c.C >= 1 and (c.policy == "dla" or 2 ** (c.C - 1) >= c.T) for c in seen)
    assert len(set(seen)) > len(seen) // 2  # mostly distinct cases
