"""The decisions of DLA-v1.1, held by the reference, the shared validation and the tolerance model.

Each test pins one decided ambiguity of DLA-v1 (Appendix C of the spec) on the
reference, so the suite's generated checks (which compare implementations with
the reference) inherit it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dla.reference as ref
from dla import Cache, Config
from dla.claims import resolve
from dla.conformance.inputs import dyadic_scores, quantize
from dla.conformance.regime_cases import MANTISSA, neighbours, plan_with_prefix_sums
from dla.conformance.tolerance import compare_cache
from dla.reference import validation as val
from dla.reference.scores import key_cosine


def _rows(k: np.ndarray) -> np.ndarray:
    return np.moveaxis(k, 2, 1).reshape(-1, k.shape[1], k.shape[3])


@pytest.mark.parametrize("exponent", [-1000, -100, 0, 100, 1000])
def test_repeated_scaled_and_negated_keys_score_exactly(exponent: int) -> None:
    """DLA-2.6: +-2^j multiples of a key score exactly 0 and 2 at any norm, never as zero keys,
    never NaN, with entries from the smallest normal to the largest finite float64 range."""
    rng = np.random.default_rng(exponent + 2000)
    a = np.ldexp(rng.standard_normal(16), exponent)
    j = rng.integers(-20, 21, size=40)
    sign = np.where(rng.random(40) < 0.3, -1.0, 1.0)
    k = (sign[:, None] * np.ldexp(1.0, j)[:, None] * a)[None, :, None, :]
    iota = key_cosine(_rows(k), None)[0, 1:]
    same = sign[1:] == sign[:-1]
    assert np.array_equal(iota, np.where(same, 0.0, 2.0))


def test_scores_do_not_depend_on_the_norm() -> None:
    """DLA-2.6: scaling every key by a power of two leaves every score unchanged (bit for bit)."""
    rng = np.random.default_rng(5)
    k = rng.standard_normal((1, 30, 2, 8))
    base = key_cosine(_rows(k), None)
    for e in (-1000, -300, 300, 1000):
        assert np.array_equal(key_cosine(_rows(np.ldexp(k, e)), None), base)


def test_the_first_external_score_is_kept() -> None:
    """DLA-2.7: with external scores, position 0's score counts in its state's information
    (DLA-2.3's iota_0 = 0 is a key-cosine rule)."""
    rng = np.random.default_rng(1)
    x = {"q": rng.standard_normal((1, 3, 1, 2)), "k": rng.standard_normal((1, 3, 1, 2)),
         "v": rng.standard_normal((1, 3, 1, 2)), "g": -rng.uniform(0, 1, (1, 3, 1)),
         "lam": np.ones((1, 3, 1, 1))}
    scores = np.array([0.75, 0.25, 0.5]).reshape(1, 3, 1)
    _, cache = ref.forward(**x, config=Config(1, tau=2.0, score="external"), scores=scores,
                           output_final_cache=True)
    assert cache is not None and cache.info[0, 0, 0] == 1.5
    _, cache = ref.forward(**x, config=Config(1, tau=2.0), output_final_cache=True)
    assert cache is not None
    iota = key_cosine(_rows(x["k"]), None)[0]
    assert iota[0] == 0.0 and cache.info[0, 0, 0] == iota[1] + iota[2]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("tau", [0.1, 0.3, 0.5, 1.1, 1.9])
def test_threshold_is_an_exact_comparison(dtype: str, tau: float) -> None:
    """DLA-3.8: a score of the dtype is a boundary iff it exceeds the float64 tau exactly; the
    recipe (compare with tau rounded toward -inf in the dtype) gives the same answers."""
    down, up = neighbours(tau, dtype)
    assert down <= tau < up
    assert quantize(np.array([down, up]), dtype).tolist() == [down, up]
    e = np.floor(np.log2(up))
    assert up - down <= 2.0 ** (e - MANTISSA[dtype])  # adjacent in the dtype
    scores = np.array([0.0, down, up, down, up]).reshape(1, 5, 1)
    plan = ref.make_plan(Config(5, tau=tau, score="external"), scores=scores)
    assert plan.boundary[0, :, 0].tolist() == [True, False, True, False, True]
    tau_d = down  # tau rounded toward minus infinity in the dtype
    assert [s > tau_d for s in (down, up)] == [s > tau for s in (down, up)]


def test_float32_tenths_above_the_float64_tenth_are_boundaries() -> None:
    """DLA-3.8's example: float32 0.1 exceeds float64 0.1, so each is a boundary."""
    tenth = float(np.float32(0.1))
    scores = np.full((1, 6, 1), tenth)
    plan = ref.make_plan(Config(6, tau=0.1, score="external"), scores=scores)
    assert plan.boundary.all()
    assert not np.float32(tenth) > np.float32(0.1)  # what a rounded comparison would say


def test_information_is_a_running_sum_not_prefix_differences() -> None:
    """DLA-3.9 with DLA-3.2: float64 plans follow the running sums; prefix-sum differences
    plan differently on some float64 scores (the golden case information_ties_float64)."""
    rng = np.random.default_rng(7)
    cfg = Config(3, tau=0.05, score="external")
    differ = 0
    for _ in range(40):
        row = rng.integers(0, 21, size=30) / 10.0
        mine = ref.make_plan(cfg, scores=row[None, :, None]).starts[0, :, 0]
        differ += not np.array_equal(mine, plan_with_prefix_sums(row[None], cfg)[0])
    assert differ > 0


def test_fenwick_merges_several_states_oldest_first() -> None:
    """DLA-3.9, DLA-4.1: at position 4 fenwick merges three states; their information is the
    left fold ((I_0 + I_1) + I_2)."""
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.0]).reshape(1, 5, 1)
    cfg = Config(4, policy="fenwick", score="external")
    x = {n: np.zeros((1, 5, 1, 1)) for n in ("q", "k", "v")}
    _, cache = ref.forward(**x, g=np.zeros((1, 5, 1)), lam=np.ones((1, 5, 1, 4)), config=cfg,
                           scores=scores, output_final_cache=True)
    assert cache is not None
    assert cache.info[0, 0, 0] == (0.1 + 0.2) + 0.3 + 0.7  # [0-3]: level 3, left to right
    assert cache.count[0, 0] == 2


def test_claims_refusals_name_the_argument() -> None:
    """DLA-9.14, DLA-11.6, DLA-11.7: check_forward_call(..., claims=) refuses outside the claims:
    TypeError for a dtype, ValueError citing DLA-11.2 for a base, a capacity, a size, varlen."""
    rng = np.random.default_rng(0)
    x = {"q": rng.standard_normal((1, 4, 1, 8)), "k": rng.standard_normal((1, 4, 1, 8)),
         "v": rng.standard_normal((1, 4, 1, 4)), "g": -rng.uniform(0, 1, (1, 4, 1)),
         "lam": np.ones((1, 4, 1, 2))}
    claims = {"array": "numpy", "dtypes": ("float32",), "bases": ("gla",),
              "sizes": {"C": {"max": 2}, "K": {"multiple_of": 16}}, "levels": ("execute",)}
    cfg = Config(2)
    with pytest.raises(TypeError, match=r"^q: dtype float64 .*DLA-9.3, DLA-11.2"):
        val.check_forward_call(**x, config=cfg, kind="numpy", claims=claims)
    x32 = {n: a.astype(np.float32) for n, a in x.items()}
    with pytest.raises(ValueError, match=r"^q: K = 8 is outside .*multiple of 16.*DLA-11.2"):
        val.check_forward_call(**x32, config=cfg, kind="numpy", claims=claims)
    wide = {**x32, "q": np.zeros((1, 4, 1, 16), np.float32), "k": np.zeros((1, 4, 1, 16),
                                                                         np.float32)}
    with pytest.raises(ValueError, match=r"^config.base: 'delta'"):
        val.check_forward_call(**wide, config=Config(2, base="delta"), kind="numpy",
                               beta=np.ones((1, 4, 1), np.float32), claims=claims)
    with pytest.raises(ValueError, match=r"^cu_seqlens: varlen"):
        val.check_forward_call(**wide, config=cfg, kind="numpy", claims=claims,
                               cu_seqlens=np.array([0, 4]))
    with pytest.raises(ValueError, match=r"^initial_cache: streaming"):
        val.check_forward_call(**wide, config=cfg, kind="numpy", claims=claims,
                               output_final_cache=True)
    val.check_forward_call(**wide, config=cfg, kind="numpy", claims=claims)  # inside: no error
    with pytest.raises(ValueError, match=r"^capacity: capacity 3"):
        val.check_plan_call(Config(3), kind="numpy", k=wide["k"], claims=claims)


def test_claims_resolve_and_fit_sizes() -> None:
    """DLA-11.6: size rules, per-device dtypes and the nearest claimed size."""
    c = resolve({"dtypes": {"cpu": ("float32",), "cuda": ("bfloat16",)},
                 "devices": ("cpu", "cuda"), "sizes": {"K": {"multiple_of": 64, "max": 256},
                                                       "V": {"power_of_two": True}}})
    assert c.dtypes_on("cuda") == ("bfloat16",) and c.all_dtypes == ("bfloat16", "float32")
    assert c.fit("K", 8) == 64 and c.fit("K", 300) == 256 and c.fit("V", 12) == 16
    assert c.size_rule("T").allows(0) and not c.size_rule("K").allows(65)


def test_cache_positions_are_slots() -> None:
    """DLA-10.6: one wrong slot matrix of the carried states is located at (n, h, slot)."""
    rng = np.random.default_rng(3)
    c = ref.empty_cache(2, 3, 4, 5, 6)
    states = rng.standard_normal((2, 3, 4, 5, 6))
    good = dataclasses.replace(c, states=states, info=rng.uniform(0, 1, (2, 3, 4)))
    bad_states = states.copy()
    bad_states[1, 2, 3] *= 1.01
    bad = Cache(**{**dataclasses.asdict(good), "states": bad_states})
    comp = compare_cache(bad, good, "float32")
    assert not comp.passed and comp.field == "cache.states" and comp.where == (1, 2, 3)


def test_dyadic_scores_are_exact_in_bfloat16() -> None:
    """DLA-10.8: the suite's dyadic scores have at most 8 significant bits, below 2^8."""
    s = dyadic_scores(np.random.default_rng(0), (4, 64, 3), denom=8, top=2)
    assert np.array_equal(quantize(s, "bfloat16"), s) and s.max() < 2.0**8
