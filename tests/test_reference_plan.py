"""The plan stage of the float64 reference: DLA policy, Fenwick policy, token scores, margins.

The strongest check here compares ``make_plan`` with a deliberately naive,
per-token Python implementation of DLA-3 (``helpers.naive_dla_plan``) over
Hypothesis-generated dyadic scores, where exact ties are common.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import (
    config,
    dyadic_lists,
    fenwick_level,
    naive_dla_plan,
    naive_fenwick_plan,
    padded,
    random_inputs,
)
from hypothesis import given
from hypothesis import strategies as st

import dla
from dla.reference import forward, make_plan, plan_with_margins
from dla.reference.policies import fenwick_capacity

TAUS = st.sampled_from([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])


def external_plan(scores: np.ndarray, C: int, tau: float) -> tuple[dla.Plan, object]:
    """``plan_with_margins`` for external scores ``[B, T, H]``."""
    return plan_with_margins(config(C, tau=tau, score="external"), scores=scores)


def assert_row_matches_naive(plan: dla.Plan, b: int, h: int, steps, C: int) -> None:
    for t, s in enumerate(steps):
        where = f"(b={b}, t={t}, h={h})"
        assert bool(plan.boundary[b, t, h]) == s.boundary, f"boundary {where}"
        assert int(plan.count[b, t, h]) == len(s.starts), f"count {where}"
        assert plan.starts[b, t, h].tolist() == padded(s.starts, C), f"starts {where}"
        assert plan.labels[b, t, h].tolist() == padded(s.labels, C), f"labels {where}"


def rows_of(scores: np.ndarray):
    B, _, H = scores.shape
    return [(b, h, scores[b, :, h].tolist()) for b in range(B) for h in range(H)]


# ----------------------------------------------------------------- DLA-3 against the naive planner
@given(data=st.data(), C=st.integers(1, 5), tau=TAUS)
def test_dla_plan_equals_naive_planner_on_dyadic_scores(data, C, tau):
    """DLA-3.1 to DLA-3.5, DLA-6.1: every boundary, count, start and label."""
    B, H = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    T = data.draw(st.integers(0, 24))
    flat = data.draw(st.lists(st.integers(0, 8), min_size=B * T * H, max_size=B * T * H))
    scores = np.array(flat, dtype=np.float64).reshape(B, T, H) / 4.0
    plan, margins = external_plan(scores, C, tau)
    assert plan.boundary.dtype == np.bool_
    assert plan.count.shape == plan.boundary.shape == margins.merge.shape == (B, T, H)
    assert plan.starts.shape == plan.labels.shape == (B, T, H, C)
    for f in ("count", "starts", "labels"):
        assert getattr(plan, f).dtype == np.int64
    for b, h, row in rows_of(scores):
        steps = naive_dla_plan(row, C, tau)
        assert_row_matches_naive(plan, b, h, steps, C)
        # DLA-6.3: the margins of the same decisions
        assert margins.boundary[b, :, h].tolist() == [s.boundary_margin for s in steps]
        assert margins.merge[b, :, h].tolist() == [s.merge_margin for s in steps]


@given(iota=dyadic_lists(1, 24), C=st.integers(1, 5), tau=TAUS)
def test_final_cache_information_equals_naive_information(iota, C, tau):
    """DLA-3.2, DLA-3.4, DLA-7.1: the information of each state, through every merge."""
    T = len(iota)
    x = random_inputs(0, 1, T, 1, 2, 2, C, score="external")
    x["scores"] = np.array(iota).reshape(1, T, 1)
    _, cache = forward(**x, config=config(C, tau=tau, score="external"), output_final_cache=True)
    last = naive_dla_plan(iota, C, tau)[-1]
    n = len(last.starts)
    assert int(cache.count[0, 0]) == n
    assert cache.info[0, 0, :n].tolist() == last.infos
    assert cache.info[0, 0, n:].tolist() == [0.0] * (C - n)
    assert cache.starts[0, 0].tolist() == padded(last.starts, C)


# ----------------------------------------------------------------- hand-checkable cases
def _plan1(iota: list[float], C: int, tau: float):
    scores = np.array(iota, dtype=np.float64).reshape(1, -1, 1)
    plan, margins = external_plan(scores, C, tau)
    return plan.boundary[0, :, 0], plan.starts[0, :, 0], margins


def test_threshold_is_strict():
    """DLA-3.1: ``iota == tau`` does not open a state; ``iota > tau`` does; token 0 always does."""
    boundary, starts, _ = _plan1([0.0, 0.5, 0.75, 0.5], C=4, tau=0.5)
    assert boundary.tolist() == [True, False, True, False]
    assert starts[-1].tolist() == [0, 2, -1, -1]


def test_first_token_opens_even_below_tau():
    """DLA-3.1: the first token of a fresh sequence opens a state whatever its score."""
    boundary, starts, margins = _plan1([0.0], C=1, tau=1.0)
    assert boundary.tolist() == [True]
    assert starts[0].tolist() == [0]
    assert margins.boundary[0, 0, 0] == np.inf


def test_merge_tie_goes_to_the_oldest_pair():
    """DLA-3.4: three states of information 1, costs (2, 2): the pair (0, 1) merges."""
    _, starts, margins = _plan1([1.0, 1.0, 1.0], C=2, tau=0.5)
    assert starts[2].tolist() == [0, 2]
    assert margins.merge[0, 2, 0] == 0.0  # DLA-6.3: an exact tie has margin 0


def test_merge_cost_is_the_information_sum_not_the_length():
    """DLA-3.2, DLA-3.4: states [0..3] (I = 0.75), [4] (I = 1), [5] (I = 1).

    Costs are (1.75, 2): the long, low-information pair merges. A planner that
    used segment lengths (4, 1, 1) would merge the two short states instead.
    """
    _, starts, margins = _plan1([0.0, 0.25, 0.25, 0.25, 1.0, 1.0], C=2, tau=0.5)
    assert starts[5].tolist() == [0, 5]
    assert margins.merge[0, 5, 0] == 0.25


def test_cheapest_pair_can_be_the_newest():
    """DLA-3.4: informations (2, 2, 0.75, 0.75): costs (4, 2.75, 1.5), the newest pair merges."""
    _, starts, _ = _plan1([2.0, 2.0, 0.75, 0.75], C=3, tau=0.5)
    assert starts[3].tolist() == [0, 1, 2]


# ----------------------------------------------------------------- invariants (DLA-3.6)
def assert_partition_invariants(plan: dla.Plan, C: int, policy: str) -> None:
    B, T, H = plan.count.shape
    for b in range(B):
        for h in range(H):
            prev: set[int] | None = None
            for t in range(T):
                n = int(plan.count[b, t, h])
                starts = plan.starts[b, t, h].tolist()
                labels = plan.labels[b, t, h].tolist()
                assert 1 <= n <= C
                used = starts[:n]
                assert used[0] == 0 and used[-1] <= t
                assert all(x < y for x, y in itertools.pairwise(used)), "ordered and contiguous"
                assert starts[n:] == [-1] * (C - n) and labels[n:] == [-1] * (C - n)
                if prev is not None:  # coarsening: every start existed before, or is t itself
                    assert set(used) <= prev | {t}
                prev = set(used)
                if policy == "dla":
                    assert labels[:n] == list(range(n - 1, -1, -1))  # DLA-3.5 recency rank
                else:
                    ends = [*used[1:], t + 1]
                    for j in range(n):  # DLA-4.1: every token of state j has level labels[j]
                        assert {fenwick_level(t, s) for s in range(used[j], ends[j])} == {labels[j]}
                    assert len(set(labels[:n])) == n


@given(seed=st.integers(0, 2**16), T=st.integers(1, 40), C=st.integers(1, 6), tau=TAUS,
       score=st.sampled_from(["key_cosine", "external"]))
def test_dla_partition_invariants(seed, T, C, tau, score):
    """DLA-3.6: at most C states, contiguous, ordered, coarsening; DLA-3.5 labels."""
    x = random_inputs(seed, 2, T, 2, 3, 1, C, score=score, dyadic=seed % 2 == 0)
    plan = make_plan(config(C, tau=tau, score=score), k=x["k"], scores=x.get("scores"))
    assert_partition_invariants(plan, C, "dla")


@given(seed=st.integers(0, 2**16), T=st.integers(1, 40), extra=st.integers(0, 2))
def test_fenwick_partition_and_levels(seed, T, extra):
    """DLA-4.1, DLA-4.2: levels are ``bit_length(t XOR s)``; every token opens a state."""
    C = fenwick_capacity(T) + extra
    x = random_inputs(seed, 1, T, 2, 3, 1, C)
    plan = make_plan(config(C, policy="fenwick", tau=5.0), k=x["k"])
    assert plan.boundary.all()
    assert_partition_invariants(plan, C, "fenwick")
    for h in range(2):
        assert_row_matches_naive(plan, 0, h, naive_fenwick_plan(T), C)


def test_fenwick_capacity_is_exactly_what_the_levels_need():
    """DLA-4.2, DLA-9.11: T positions need as many slots as levels occur, and no fewer pass."""
    for T in range(1, 70):
        need = max(fenwick_level(t, s) for t in range(T) for s in range(t + 1)) + 1
        assert fenwick_capacity(T) == need
        k = np.ones((1, T, 1, 2))
        assert make_plan(config(need, policy="fenwick"), k=k).count.max() <= need
        if need > 1:
            with pytest.raises(ValueError, match=r"capacity.*DLA-9\.11"):
                make_plan(config(need - 1, policy="fenwick"), k=k)


@given(seed=st.integers(0, 2**16), T=st.integers(1, 30), extra=st.integers(0, 3),
       score=st.sampled_from(["key_cosine", "external"]))
def test_capacity_at_least_T_and_negative_tau_gives_one_state_per_token(seed, T, extra, score):
    """DLA-3.1, DLA-3.4: with ``tau < 0`` every token opens, and ``C >= T`` never merges."""
    C = T + extra
    x = random_inputs(seed, 1, T, 2, 3, 1, C, score=score)
    plan = make_plan(config(C, tau=-0.5, score=score), k=x["k"], scores=x.get("scores"))
    for t in range(T):
        assert (plan.count[0, t] == t + 1).all()
        assert (plan.starts[0, t, :, : t + 1] == np.arange(t + 1)).all()
        assert (plan.starts[0, t, :, t + 1 :] == -1).all()
        assert (plan.labels[0, t, :, : t + 1] == t - np.arange(t + 1)).all()  # DLA-3.7: p_t - s
    assert plan.boundary.all()


# ----------------------------------------------------------------- token scores (DLA-2)
def token_iota(k_row: np.ndarray, initial_cache: dla.Cache | None = None) -> list[float]:
    """The scores of one row ``k [T, K]``, read exactly from the final cache.

    With ``tau < 0`` and ``C >= T`` every token is its own state, so the
    information of state ``t`` is ``iota_t`` (DLA-3.2).
    """
    T, K = k_row.shape
    C = T if initial_cache is None else int(initial_cache.starts.shape[-1])
    k = k_row.reshape(1, T, 1, K)
    q, v, g = np.zeros_like(k), np.zeros((1, T, 1, 1)), np.zeros((1, T, 1))
    lam = np.ones((1, T, 1, C))
    _, cache = forward(q, k, v, g, lam, config(C, tau=-1.0), initial_cache=initial_cache,
                       output_final_cache=True)
    n0 = 0 if initial_cache is None else int(initial_cache.count[0, 0])
    return cache.info[0, 0, n0 : n0 + T].tolist()


def test_zero_norm_keys_score_one_and_first_token_scores_zero():
    """DLA-2.2: a zero key makes ``cos = 0``, so ``iota = 1``; DLA-2.3: ``iota_0 = 0``."""
    k = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, -1.0]])
    assert token_iota(k) == [0.0, 1.0, 1.0, 1.0, 1.0]


@given(seed=st.integers(0, 2**16), K=st.integers(1, 8), mag=st.sampled_from([1e-30, 1.0, 1e30]))
def test_identical_keys_score_zero_and_opposite_keys_score_two(seed, K, mag):
    """DLA-2.1: identical (and positively scaled) keys give exactly 0, opposite keys exactly 2."""
    a = np.random.default_rng(seed).standard_normal(K) * mag
    k = np.stack([a, a, 4.0 * a, -a, a, 0.5 * a])
    assert token_iota(k) == [0.0, 0.0, 0.0, 2.0, 2.0, 0.0]


@given(seed=st.integers(0, 2**16), K=st.integers(1, 8), T=st.integers(2, 12))
def test_key_cosine_scores_match_the_formula(seed, K, T):
    """DLA-2.1: ``iota_t = 1 - (k_t . k_{t-1}) / (|k_t| |k_{t-1}|)`` in ``[0, 2]``."""
    k = np.random.default_rng(seed).standard_normal((T, K))
    got = token_iota(k)
    want = [0.0] + [1 - k[t] @ k[t - 1] / np.linalg.norm(k[t]) / np.linalg.norm(k[t - 1])
                    for t in range(1, T)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    assert all(0.0 <= x <= 2.0 for x in got)


def test_first_token_after_a_carried_cache_uses_prev_key():
    """DLA-2.3: after a carried cache, ``iota = 1 - cos(k_t, prev_key)``."""
    k = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    C = 3
    x = {"q": np.zeros((1, 1, 1, 2)), "k": k[:1].reshape(1, 1, 1, 2), "v": np.zeros((1, 1, 1, 1)),
         "g": np.zeros((1, 1, 1)), "lam": np.ones((1, 1, 1, C))}
    _, cache = forward(**x, config=config(C, tau=-1.0), output_final_cache=True)
    assert cache.prev_key[0, 0].tolist() == [1.0, 0.0]
    assert token_iota(k[1:], initial_cache=cache) == [1.0, 2.0]  # orthogonal, then opposite


def test_key_cosine_boundary_margin_is_distance_to_tau():
    """DLA-6.3 with key_cosine scores: the margin of each boundary is ``|iota_t - tau|``."""
    k = np.random.default_rng(3).standard_normal((1, 12, 2, 4))
    tau = 0.6
    _, m = plan_with_margins(config(3, tau=tau), k=k)
    for h in range(2):
        iota = [0.0] + [1 - np.dot(k[0, t, h], k[0, t - 1, h]) / np.linalg.norm(k[0, t, h])
                        / np.linalg.norm(k[0, t - 1, h]) for t in range(1, 12)]
        assert m.boundary[0, 0, h] == np.inf
        want = np.abs(np.array(iota[1:]) - tau)
        np.testing.assert_allclose(m.boundary[0, 1:, h], want, atol=1e-14)


@given(iota=dyadic_lists(1, 40), extra=st.integers(0, 2))
def test_fenwick_margins_are_infinite_and_information_is_accumulated(iota, extra):
    """DLA-4.4, DLA-2.5: fenwick decisions have margin +inf; the cache still sums the scores."""
    T = len(iota)
    C = fenwick_capacity(T) + extra
    cfg = config(C, policy="fenwick", score="external", tau=0.0)
    scores = np.array(iota).reshape(1, T, 1)
    _plan, margins = plan_with_margins(cfg, scores=scores)
    assert np.isinf(margins.boundary).all() and np.isinf(margins.merge).all()
    x = random_inputs(0, 1, T, 1, 2, 2, C, score="external")
    x["scores"] = scores
    _, cache = forward(**x, config=cfg, output_final_cache=True)
    last = naive_fenwick_plan(T)[-1]
    ends = [*last.starts[1:], T]
    want = [sum(iota[a:b]) for a, b in zip(last.starts, ends, strict=True)]
    n = len(want)
    assert cache.info[0, 0, :n].tolist() == want  # dyadic: every order of addition is exact
    assert cache.starts[0, 0].tolist() == padded(last.starts, C)
    assert cache.labels[0, 0].tolist() == padded(last.labels, C)


@given(seed=st.integers(0, 2**16), T=st.integers(1, 16), C=st.integers(1, 4), tau=TAUS)
def test_external_scores_are_the_given_scores_and_keys_do_not_matter(seed, T, C, tau):
    """DLA-2.4: ``iota_t = scores_t`` (token 0 keeps its score), and keys do not change the plan.

    With ``tau < 0`` and ``C >= T`` every token is its own state, so the
    cache's information is ``iota`` token by token (DLA-3.2); the first entry
    is the given score, not 0 as under key_cosine (DLA-2.3).
    """
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 2.0, (1, T, 2)) + 0.01  # token 0 has a non-zero score
    x = random_inputs(seed, 1, T, 2, 3, 2, T, score="external")
    x["scores"] = scores
    _, cache = forward(**x, config=config(T, tau=-1.0, score="external"), output_final_cache=True)
    np.testing.assert_array_equal(cache.info[0], scores[0].T)
    cfg = config(C, tau=tau, score="external")
    plan = make_plan(cfg, scores=scores)
    other_k = rng.standard_normal(x["k"].shape)
    for k in (x["k"], other_k, np.zeros_like(other_k)):
        assert make_plan(cfg, k=k, scores=scores).equals(plan)
    lam = np.ones((1, T, 2, C))
    y = {**x, "k": other_k, "lam": lam}
    _, c1 = forward(**{**x, "lam": lam}, config=cfg, output_final_cache=True)
    _, c2 = forward(**y, config=cfg, output_final_cache=True)
    for f in ("starts", "labels", "count", "info"):
        np.testing.assert_array_equal(getattr(c1, f), getattr(c2, f), err_msg=f)
