"""The suite catches broken implementations (issue 3): certify rejects every planted bug.

Each entry of ``dla.conformance.broken.BROKEN`` is the reference with one rule
changed; certification (profile ``ci``) must fail it, report at least one of
the clauses the bug violates, and do so with a wrong answer caught by a
comparison, not only because the variant crashed. The reference itself
passes every level it claims, so the failures are the bugs' and not the
suite's.
"""

from __future__ import annotations

import numpy as np
import pytest

from dla import Config, reference
from dla.conformance import certify
from dla.conformance.broken import BROKEN, CRASHES, REGIME_OF, Broken, TorchBroken, main

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _caught_by_value(report, expected: set[str]) -> list:
    """Failed results citing an expected clause whose detail is a mismatch, not a crash."""
    return [r for r in report.results if not r.passed and set(r.clauses()) & expected
            and not r.detail.startswith("raised ")]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_certify_rejects_broken_variant(name: str) -> None:
    impl, expected = BROKEN[name]
    report = certify(impl, profile="ci", seed=0)
    failed = report.failed_clauses()
    assert not report.passed, f"{name}: certify passed a broken implementation"
    assert failed & expected, f"{name}: failed {sorted(failed)}, expected one of {sorted(expected)}"
    if name not in CRASHES:
        assert _caught_by_value(report, expected), (
            f"{name}: only crashes, no wrong value, reported for {sorted(expected)}:\n"
            + report.summary())
    if REGIME_OF.get(name):  # DLA-12.11: the regime that exists for this class of bug catches it
        regimes = {r.regime for r in report.results if not r.passed}
        assert REGIME_OF[name] in regimes, f"{name}: caught only in regimes {sorted(regimes)}"


def test_reference_passes_every_claimed_level() -> None:
    report = certify("reference", profile="ci", seed=0)
    assert report.passed, report.summary()
    assert set(report.levels) >= set(reference.CLAIMS["levels"]) | {"properties"}
    assert all(report.level_passed().values())


def test_every_variant_claims_only_levels_and_a_float64_reference_kind() -> None:
    """Variants run in float64, like the reference, so tolerance never hides a bug; NumPy except
    the backward variant, which needs torch's autograd."""
    for name, (impl, expected) in BROKEN.items():
        assert isinstance(impl, (Broken, TorchBroken)) and impl.NAME == name
        kind = "torch" if isinstance(impl, TorchBroken) else "numpy"
        assert impl.CLAIMS["array"] == kind and impl.CLAIMS["dtypes"] == ("float64",)
        assert expected and all(c.startswith("DLA-") for c in expected)


def _inputs(seed: int, T: int = 12, C: int = 2) -> tuple[dict[str, np.ndarray], Config]:
    rng = np.random.default_rng(seed)
    B, H, K, V = 1, 2, 3, 2
    x = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, H, V)), "g": -rng.uniform(0, 0.5, (B, T, H)),
         "lam": rng.uniform(0.5, 1.5, (B, T, H, C))}
    return x, Config(C, 0.3)


@pytest.mark.parametrize("name", ["varlen_leak", "ignores_initial_cache", "future_query"])
def test_variant_equals_reference_where_its_bug_cannot_show(name: str) -> None:
    """The planted bug is the only difference: away from it the variant is the reference.

    A varlen leak and an ignored cache need ``cu_seqlens`` / ``initial_cache``;
    reading ``q_{t+1}`` cannot change the last token.
    """
    impl, _ = BROKEN[name]
    x, cfg = _inputs(3)
    o, cache = impl.forward(*x.values(), cfg, output_final_cache=True)
    r, r_cache = reference.forward(*x.values(), cfg, output_final_cache=True)
    if name == "future_query":
        np.testing.assert_array_equal(o[:, -1], r[:, -1])
        assert not np.allclose(o, r)
    else:
        np.testing.assert_array_equal(o, r)
        np.testing.assert_array_equal(cache.states, r_cache.states)
    assert impl.make_plan(cfg, k=x["k"]).equals(reference.make_plan(cfg, k=x["k"]))


def test_patches_are_undone_after_each_call() -> None:
    """A variant's patch is active only inside its own call: the reference is left intact."""
    x, cfg = _inputs(4, T=20)
    before = reference.forward(*x.values(), cfg)[0]
    BROKEN["oldest_state_not_decayed"][0].forward(*x.values(), cfg)
    BROKEN["labels_from_oldest"][0].make_plan(cfg, k=x["k"])
    np.testing.assert_array_equal(reference.forward(*x.values(), cfg)[0], before)


def test_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boundary_at_equality"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "name | expected clauses | failed clauses | caught? | seconds"
    cells = [c.strip() for c in out[1].split("|")]
    assert cells[0] == "boundary_at_equality" and cells[1] == "DLA-3.1"
    assert "DLA-3.1" in cells[2] and cells[3] == "yes"


def test_command_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit):
        main(["no_such_variant"])
