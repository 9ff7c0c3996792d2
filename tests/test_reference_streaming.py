"""Streaming (DLA-7) and varlen (DLA-8) of the float64 reference."""

from __future__ import annotations

import itertools

import numpy as np
from helpers import config, naive_dla_plan, padded, random_inputs, slice_t
from hypothesis import given
from hypothesis import strategies as st

import dla
from dla.reference import empty_cache, forward, make_plan, plan_with_margins
from dla.reference.policies import fenwick_capacity

TAUS = st.sampled_from([-0.5, 0.0, 0.25, 0.5, 1.0])
POLICIES = st.sampled_from(["dla", "fenwick"])
BASES = st.sampled_from(["gla", "delta"])
SCORES = st.sampled_from(["key_cosine", "external"])
RTOL, ATOL = 1e-10, 1e-12
PLAN_FIELDS = ("boundary", "count", "starts", "labels")
EXACT_CACHE_FIELDS = ("starts", "labels", "count", "prev_key", "position")


def capacity_for(policy: str, T: int, C: int) -> int:
    return C if policy == "dla" else max(C, fenwick_capacity(T))


def cat_plans(plans: list[dla.Plan]) -> dla.Plan:
    return dla.Plan(**{f: np.concatenate([getattr(p, f) for p in plans], axis=1)
                       for f in PLAN_FIELDS})


def cat_caches(caches: list[dla.Cache]) -> dla.Cache:
    return dla.Cache(**{f: np.concatenate([getattr(c, f) for c in caches], axis=0)
                        for f in dla.cache.CACHE_FIELDS})


def assert_plans_equal(a: dla.Plan, b: dla.Plan) -> None:
    for f in PLAN_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"plan.{f}")


def assert_caches_equal(a: dla.Cache, b: dla.Cache) -> None:
    for f in EXACT_CACHE_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f"cache.{f}")
    np.testing.assert_allclose(a.states, b.states, rtol=RTOL, atol=ATOL, err_msg="cache.states")
    np.testing.assert_allclose(a.info, b.info, rtol=RTOL, atol=ATOL, err_msg="cache.info")


def plan_of(cfg: dla.Config, x: dict, **kw) -> dla.Plan:
    return make_plan(cfg, k=x["k"], scores=x.get("scores"), **kw)


# ----------------------------------------------------------------- DLA-7.2
@given(seed=st.integers(0, 2**16), B=st.integers(1, 2), T=st.integers(0, 30), H=st.integers(1, 2),
       C=st.integers(1, 5), tau=TAUS, policy=POLICIES, base=BASES, score=SCORES, data=st.data())
def test_streaming_in_pieces_equals_one_pass(seed, B, T, H, C, tau, policy, base, score, data):
    """DLA-7.2: outputs, plans and the final cache do not depend on how the sequence is cut.

    Cut points may repeat (empty pieces) or be adjacent (pieces of one token).
    """
    cuts = sorted(data.draw(st.lists(st.integers(0, T), max_size=5)))
    bounds = [0, *cuts, T]
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, B, T, H, 3, 2, C, base=base, score=score)
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    o_full, cache_full = forward(**x, config=cfg, output_final_cache=True)
    plan_full = plan_of(cfg, x)
    outs, plans, cache = [], [], None
    for a, b in itertools.pairwise(bounds):
        piece = slice_t(x, a, b)
        plans.append(plan_of(cfg, piece, initial_cache=cache))
        o, cache = forward(**piece, config=cfg, initial_cache=cache, output_final_cache=True)
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), o_full, rtol=RTOL, atol=ATOL)
    assert_plans_equal(cat_plans(plans), plan_full)
    assert_caches_equal(cache, cache_full)
    # DLA-7.1: prev_key is the last key under both score sources; position counts tokens
    last_key = x["k"][:, -1] if T else np.zeros_like(cache_full.prev_key)
    np.testing.assert_array_equal(cache_full.prev_key, last_key)
    assert (cache_full.position == T).all()


@given(seed=st.integers(0, 2**16), T=st.integers(0, 12), C=st.integers(1, 4), tau=TAUS,
       base=BASES, score=SCORES)
def test_empty_cache_is_the_same_as_no_cache(seed, T, C, tau, base, score):
    """DLA-7.3: ``empty_cache`` is the same as no cache: plan, outputs and final cache.

    Also its layout (count 0, ``-1`` slots, zero floats, position 0) and DLA-2.3:
    its first score is 0 (under key_cosine a non-zero score would open a state).
    """
    x = random_inputs(seed, 2, T, 2, 3, 2, C, base=base, score=score)
    cfg = config(C, tau=tau, score=score, base=base)
    o1, c1 = forward(**x, config=cfg, output_final_cache=True)
    fresh = empty_cache(2, 2, C, 3, 2)
    assert (fresh.count == 0).all() and (fresh.position == 0).all()
    assert (fresh.starts == -1).all() and (fresh.labels == -1).all()
    assert not (fresh.states.any() or fresh.info.any() or fresh.prev_key.any())
    o2, c2 = forward(**x, config=cfg, output_final_cache=True, initial_cache=fresh)
    np.testing.assert_array_equal(o1, o2)
    assert_caches_equal(c1, c2)
    assert_plans_equal(plan_of(cfg, x), plan_of(cfg, x, initial_cache=fresh))


def test_empty_call_returns_an_empty_output_and_a_fresh_cache():
    """DLA-1.1: ``T = 0`` yields an empty output; DLA-7.1: its cache equals ``empty_cache``."""
    x = random_inputs(0, 2, 0, 3, 4, 5, 2)
    o, cache = forward(**x, config=config(2), output_final_cache=True)
    assert o.shape == (2, 0, 3, 5)
    assert_caches_equal(cache, empty_cache(2, 3, 2, 4, 5))


@given(iota=st.lists(st.integers(0, 8).map(lambda i: i / 4), min_size=1, max_size=20),
       cut=st.integers(0, 20), C=st.integers(1, 4), tau=TAUS)
def test_continued_plan_matches_naive_planner_from_a_cache(iota, cut, C, tau):
    """DLA-1.5, DLA-6.1, DLA-7.1: positions of a continued plan count the carried tokens.

    The naive planner numbers the tokens of the continued call ``position + j``.
    """
    cut = min(cut, len(iota))
    T = len(iota)
    x = random_inputs(0, 1, T, 1, 2, 2, C, score="external")
    x["scores"] = np.array(iota).reshape(1, T, 1)
    cfg = config(C, tau=tau, score="external")
    _, cache = forward(**slice_t(x, 0, cut), config=cfg, output_final_cache=True)
    n = int(cache.count[0, 0])
    carried = list(zip(cache.starts[0, 0, :n].tolist(), cache.info[0, 0, :n].tolist(), strict=True))
    assert int(cache.position[0]) == cut
    plan, margins = plan_with_margins(cfg, scores=x["scores"][:, cut:], initial_cache=cache)
    steps = naive_dla_plan(iota[cut:], C, tau, carried, position=cut)
    assert steps == naive_dla_plan(iota, C, tau)[cut:]
    # DLA-6.3: after a carried cache the first token found a state, so its margin is finite
    assert margins.boundary[0, :, 0].tolist() == [s.boundary_margin for s in steps]
    assert margins.merge[0, :, 0].tolist() == [s.merge_margin for s in steps]
    for j, s in enumerate(steps):
        assert plan.starts[0, j, 0].tolist() == padded(s.starts, C)
        assert plan.labels[0, j, 0].tolist() == padded(s.labels, C)
        assert bool(plan.boundary[0, j, 0]) == s.boundary


# ----------------------------------------------------------------- DLA-8.1
def varlen_strategy(max_seqs: int = 4, max_len: int = 7):
    """Sequence lengths including 0 and 1."""
    return st.lists(st.integers(0, max_len), min_size=1, max_size=max_seqs)


def packed(x: dict, lengths: list[int]) -> tuple[list[tuple[int, int]], np.ndarray]:
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(cu)], cu


@given(seed=st.integers(0, 2**16), lengths=varlen_strategy(), H=st.integers(1, 2),
       C=st.integers(1, 4), tau=TAUS, policy=POLICIES, base=BASES, score=SCORES,
       cu_dtype=st.sampled_from([np.int32, np.int64]))
def test_varlen_equals_separate_calls(seed, lengths, H, C, tau, policy, base, score, cu_dtype):
    """DLA-8.1: each packed sequence starts fresh and equals a separate call."""
    T = sum(lengths)
    C = capacity_for(policy, max(lengths), C)
    x = random_inputs(seed, 1, T, H, 3, 2, C, base=base, score=score)
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    segs, cu = packed(x, lengths)
    o, cache = forward(**x, config=cfg, cu_seqlens=cu.astype(cu_dtype), output_final_cache=True)
    plan = plan_of(cfg, x, cu_seqlens=cu.astype(cu_dtype))
    assert o.shape == x["v"].shape and cache.count.shape == (len(lengths), H)
    sep = [forward(**slice_t(x, a, b), config=cfg, output_final_cache=True) for a, b in segs]
    np.testing.assert_allclose(o, np.concatenate([s[0] for s in sep], axis=1), rtol=RTOL, atol=ATOL)
    assert_caches_equal(cache, cat_caches([s[1] for s in sep]))
    assert_plans_equal(plan, cat_plans([plan_of(cfg, slice_t(x, a, b)) for a, b in segs]))
    if base == "gla" and T:
        om, _ = forward(**x, config=cfg, cu_seqlens=cu, masked=True)
        np.testing.assert_allclose(om, o, rtol=RTOL, atol=ATOL)


@given(seed=st.integers(0, 2**16), lengths=varlen_strategy(), prefixes=varlen_strategy(4, 5),
       H=st.integers(1, 2), C=st.integers(1, 4), tau=TAUS, policy=POLICIES, base=BASES,
       score=SCORES)
def test_varlen_with_initial_cache_rows(seed, lengths, prefixes, H, C, tau, policy, base, score):
    """DLA-8.1: sequence ``n`` continues row ``n`` of ``initial_cache`` ([N, ...] rows)."""
    N = len(lengths)
    prefixes = (prefixes * N)[:N]
    C = capacity_for(policy, max(a + b for a, b in zip(lengths, prefixes, strict=True)), C)
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    row_caches = []
    for n, p in enumerate(prefixes):  # a different history for every sequence
        _, c = forward(**random_inputs(seed + 100 + n, 1, p, H, 3, 2, C, base=base, score=score),
                       config=cfg, output_final_cache=True)
        row_caches.append(c)
    init = cat_caches(row_caches)
    T = sum(lengths)
    x = random_inputs(seed, 1, T, H, 3, 2, C, base=base, score=score)
    segs, cu = packed(x, lengths)
    o, cache = forward(**x, config=cfg, cu_seqlens=cu, initial_cache=init, output_final_cache=True)
    plan = plan_of(cfg, x, cu_seqlens=cu, initial_cache=init)
    sep = [forward(**slice_t(x, a, b), config=cfg, initial_cache=row_caches[n],
                   output_final_cache=True) for n, (a, b) in enumerate(segs)]
    np.testing.assert_allclose(o, np.concatenate([s[0] for s in sep], axis=1), rtol=RTOL, atol=ATOL)
    assert_caches_equal(cache, cat_caches([s[1] for s in sep]))
    sep_plans = [plan_of(cfg, slice_t(x, a, b), initial_cache=row_caches[n])
                 for n, (a, b) in enumerate(segs)]
    assert_plans_equal(plan, cat_plans(sep_plans))


@given(seed=st.integers(0, 2**16), P=st.integers(0, 9), C=st.integers(1, 4), policy=POLICIES,
       base=BASES, score=SCORES)
def test_empty_call_returns_its_initial_cache_unchanged(seed, P, C, policy, base, score):
    """DLA-7.1: a call with ``T = 0`` returns its initial cache unchanged (DLA-8.2 per row)."""
    C = capacity_for(policy, P + 1, C)
    cfg = config(C, score=score, policy=policy, base=base)
    _, cache = forward(**random_inputs(seed, 2, P, 2, 3, 2, C, base=base, score=score), config=cfg,
                       output_final_cache=True)
    o, again = forward(**random_inputs(seed, 2, 0, 2, 3, 2, C, base=base, score=score), config=cfg,
                       initial_cache=cache, output_final_cache=True)
    assert o.shape == (2, 0, 2, 2)
    for f in dla.cache.CACHE_FIELDS:
        np.testing.assert_array_equal(getattr(again, f), getattr(cache, f), err_msg=f)


@given(seed=st.integers(0, 2**16), P=st.integers(1, 9), T=st.integers(1, 9), C=st.integers(1, 4),
       score=SCORES)
def test_int32_cache_and_plan_fields_are_accepted(seed, P, T, C, score):
    """DLA-1.3, DLA-7.1: integer fields are accepted as int32 and give the same result."""
    cfg = config(C, score=score)
    x = random_inputs(seed, 1, P + T, 2, 3, 2, C, score=score)
    _, cache = forward(**slice_t(x, 0, P), config=cfg, output_final_cache=True)
    rest = slice_t(x, P, P + T)
    plan = plan_of(cfg, rest, initial_cache=cache)
    c32 = dla.Cache(**{f: getattr(cache, f).astype(np.int32) if getattr(cache, f).dtype == np.int64
                       else getattr(cache, f) for f in dla.cache.CACHE_FIELDS})
    p32 = dla.Plan(boundary=plan.boundary, **{f: getattr(plan, f).astype(np.int32)
                                              for f in ("count", "starts", "labels")})
    o64, f64 = forward(**rest, config=cfg, initial_cache=cache, output_final_cache=True)
    o32, f32 = forward(**rest, config=cfg, initial_cache=c32, plan=p32, output_final_cache=True)
    np.testing.assert_array_equal(o32, o64)
    assert_caches_equal(f32, f64)
    assert f32.count.dtype == np.int64 and f32.position.dtype == np.int64  # returned as int64
    assert_plans_equal(plan_of(cfg, rest, initial_cache=c32), plan)


@given(P=st.integers(0, 8), T=st.integers(1, 8), lengths=varlen_strategy(3, 5),
       score=SCORES)
def test_positions_count_carried_tokens_and_restart_per_sequence(P, T, lengths, score):
    """DLA-1.5: local index ``t`` of a call continuing ``P`` tokens has position ``P + t``.

    With ``tau < 0`` and room for every token, each token opens a state at its
    position, so the starts at readout ``t`` are exactly ``0 .. P + t``; the
    final cache's ``position`` is ``P + T``. With ``cu_seqlens`` positions
    count from the start of each packed sequence.
    """
    C = P + T + 1
    cfg = config(C, tau=-1.0, score=score)
    x = random_inputs(P, 1, P + T, 2, 3, 2, C, score=score)
    _, cache = forward(**slice_t(x, 0, P), config=cfg, output_final_cache=True)
    rest = slice_t(x, P, P + T)
    plan = plan_of(cfg, rest, initial_cache=cache)
    _, final = forward(**rest, config=cfg, initial_cache=cache, output_final_cache=True)
    for t in range(T):
        assert (plan.starts[0, t] == padded(list(range(P + t + 1)), C)).all()
    assert (final.position == P + T).all()
    assert (final.starts[0] == padded(list(range(P + T)), C)).all()
    # packed: every sequence restarts at position 0
    Cv = max(lengths) + 1
    y = random_inputs(1, 1, sum(lengths), 2, 3, 2, Cv, score=score)
    segs, cu = packed(y, lengths)
    vplan = plan_of(config(Cv, tau=-1.0, score=score), y, cu_seqlens=cu)
    for a, b in segs:
        for j in range(b - a):
            assert (vplan.starts[0, a + j] == padded(list(range(j + 1)), Cv)).all()
