"""torch_cpu plan stage: exact parity with the reference (DLA-3, DLA-4, DLA-6.2, DLA-7, DLA-8).

Plans are compared field by field with ``Plan.equals`` (exact), including
inputs made of exact ties (dyadic scores), near-ties that a cumulative-sum
difference would break differently from the reference's running sums
(constant non-dyadic scores), and repeated keys at ``tau = 0``. The dla policy
has two paths (a per-row event loop and an event-index loop across rows); every
dla test runs on both, forced through ``PATHS``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import config, random_inputs
from hypothesis import given
from hypothesis import strategies as st

from dla import Cache
from dla.impls import torch_cpu as tc
from dla.impls.torch_cpu import plan as tc_plan
from dla.reference import empty_cache
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan


def _t(x):
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x))


def _torch_cache(c: Cache) -> Cache:
    return Cache(**{f: torch.from_numpy(np.ascontiguousarray(getattr(c, f)))
                    for f in ("states", "info", "starts", "labels", "count", "prev_key",
                              "position")})


PATHS = ("per_row", "across_rows")


def _same_plan(cfg, path="default", **kw):
    if path != "default":
        with tc_plan.forced_path(path):
            return _same_plan(cfg, **kw)
    got = tc.make_plan(cfg, **{n: _t(x) if isinstance(x, np.ndarray) else x for n, x in kw.items()})
    want = ref_make_plan(cfg, **kw)
    assert isinstance(got.starts, torch.Tensor) and got.starts.dtype == torch.int64
    assert got.boundary.dtype == torch.bool
    assert got.equals(want)
    return got


@given(seed=st.integers(0, 10_000), T=st.integers(0, 40), C=st.integers(1, 6),
       tau=st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 3.0]), B=st.integers(1, 2),
       H=st.integers(1, 3), path=st.sampled_from(PATHS))
def test_dla_plan_equals_reference_on_dyadic_ties(seed, T, C, tau, B, H, path):
    x = random_inputs(seed, B, T, H, 2, 2, C, score="external")
    _same_plan(config(C, tau=tau, score="external"), path, scores=x["scores"])


@given(seed=st.integers(0, 10_000), T=st.integers(1, 40), C=st.integers(1, 6),
       tau=st.sampled_from([0.0, 0.3, 0.9, 1.2]), path=st.sampled_from(PATHS))
def test_dla_plan_equals_reference_key_cosine(seed, T, C, tau, path):
    x = random_inputs(seed, 2, T, 2, 3, 2, C)
    _same_plan(config(C, tau=tau), path, k=x["k"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", [0.1, 0.3, 0.7, 1.0 / 3.0])
@pytest.mark.parametrize("tau", [0.05, 0.25, 0.65, 0.9])
def test_dla_plan_running_sums_break_near_ties_like_the_reference(value, tau, path):
    """Constant non-dyadic scores: segment sums like 0.1 + 0.1 + 0.1 tie or not only in the
    order the reference adds them (DLA-3.2, DLA-3.4)."""
    rng = np.random.default_rng(3)
    s = np.full((1, 64, 2, 1), value)[..., 0]
    s[:, ::5] = value * 3  # periodic boundaries of different segment lengths
    s[:, 1, 1] = rng.uniform(0, 2)
    for C in (1, 2, 3, 5):
        _same_plan(config(C, tau=tau, score="external"), path, scores=s)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", [0.1, 0.7])
def test_dla_plan_near_ties_with_rows_out_of_step(value, path):
    """Many rows whose boundaries fall at different times and in different numbers (rows
    with fewer events are masked in the event-index loop): running sums of non-dyadic
    segments, ties broken to the oldest pair (DLA-3.2, DLA-3.4)."""
    B, H, T = 3, 8, 90
    s = np.full((B, T, H), value)
    for r in range(B * H):
        b, h = divmod(r, H)
        s[b, (r % 7) :: 2 + r % 9, h] = value * 3  # period 2 to 10, varied phase
    s[0, T // 2 :, 0] = value  # one row's events stop half way
    for C in (1, 2, 4):
        for tau in (0.25, 0.65, 0.9):
            _same_plan(config(C, tau=tau, score="external"), path, scores=s)


@pytest.mark.parametrize("path", [*PATHS, "default"])
def test_dla_plan_many_rows_equal_reference(path):
    """64 rows of uniform scores, enough for the default dispatch to loop over events."""
    x = random_inputs(11, 4, 300, 16, 2, 2, 5, score="external")
    s = np.random.default_rng(11).uniform(0.0, 1.0, x["scores"].shape)
    _same_plan(config(5, tau=0.8, score="external"), path, scores=s)


def test_dla_plan_rows_far_out_of_step_fall_back_to_the_per_row_loop():
    """Row ``r`` has a boundary at each of its first ``r`` tokens, then one long segment:
    padding every event's segment to the longest would take about ``R^2 T / 2`` values, so
    the dispatch takes the per-row loop; the plan is still the reference's (DLA-3)."""
    R, T = 40, 100
    s = np.full((1, T, R), 0.1)
    for r in range(R):
        s[0, :r, r] = 0.9
        s[0, -1, r] = 0.9
    times, _ = tc_plan._event_times(s[0].T > 0.5)
    assert tc_plan._padded_width(times, T) > tc_plan.MAX_PADDING * T  # the case is the fallback
    assert R >= tc_plan.ACROSS_ROWS_FROM
    for path in ("default", "across_rows"):
        _same_plan(config(3, tau=0.5, score="external"), path, scores=s)


@pytest.mark.parametrize("path", PATHS)
def test_dla_final_information_is_the_reference_running_sum(path):
    """DLA-3.2, DLA-7.1: the information of the final states (the cache's ``info``) equals
    the reference's running sums bit for bit, from a fresh and from a continued partition."""
    from dla.reference.policies import PartitionState
    from dla.reference.policies import plan_dla as ref_plan_dla

    R, T, C = 40, 120, 4
    rng = np.random.default_rng(5)
    iota = rng.uniform(0.0, 1.0, (R, T))
    iota[::3] = 0.1  # non-dyadic constant rows, a boundary every few tokens
    iota[::3, ::4] = 0.9
    cfg = config(C, tau=0.6, score="external")
    _, first = ref_plan_dla(iota[:, : T // 2], cfg, PartitionState.fresh(R, C))
    _, want = ref_plan_dla(iota[:, T // 2 :], cfg, first)
    init = tc_plan.Partition(first.count, first.starts, first.info, first.position)
    with tc_plan.forced_path(path):
        got = tc_plan.plan_dla(iota[:, T // 2 :], cfg, init)
    assert np.array_equal(got.final_info, want.info)
    assert np.array_equal(got.starts[:, -1], want.starts)


def test_dla_plan_repeated_keys_at_tau_zero():
    """Identical keys score exactly 0 (DLA-2.1), so at tau = 0 no boundary opens."""
    k = np.repeat(np.random.default_rng(0).standard_normal((1, 1, 2, 5)), 12, axis=1)
    k[:, 6] *= -1.0
    p = _same_plan(config(3, tau=0.0), k=k)
    assert int(p.boundary.sum()) == 2 * 3  # token 0, token 6 and token 7 in each head


@given(seed=st.integers(0, 10_000), T=st.integers(0, 30))
def test_fenwick_plan_equals_reference(seed, T):
    x = random_inputs(seed, 1, T, 2, 3, 2, 6, score="external")
    _same_plan(config(6, policy="fenwick", score="external"), scores=x["scores"])


def test_fenwick_capacity_error_matches_reference():
    s = np.zeros((1, 9, 1))
    cfg = config(4, policy="fenwick", score="external")
    with pytest.raises(ValueError, match="capacity") as mine:
        tc.make_plan(cfg, scores=_t(s))
    with pytest.raises(ValueError, match="capacity") as ref:
        ref_make_plan(cfg, scores=s)
    assert str(mine.value) == str(ref.value)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", ["dla", "fenwick"])
@pytest.mark.parametrize("score", ["key_cosine", "external"])
def test_plan_continues_a_reference_cache(policy, score, path):
    """DLA-7.2: a cache written by the reference is continued with the same decisions."""
    C, T1, T2 = 6, 11, 17
    x = random_inputs(5, 1, T1 + T2, 2, 3, 2, C, score=score)
    cfg = config(C, tau=0.9, score=score, policy=policy)
    first = {n: a[:, :T1] for n, a in x.items()}
    _, cache = ref_forward(**first, config=cfg, output_final_cache=True)
    src = {"k": x["k"][:, T1:]} if score == "key_cosine" else {"scores": x["scores"][:, T1:]}
    _same_plan(cfg, path, initial_cache=_torch_cache(cache), **src)
    whole = ref_make_plan(cfg, **({"k": x["k"]} if score == "key_cosine" else
                                  {"scores": x["scores"]}))
    with tc_plan.forced_path(path):
        got = tc.make_plan(cfg, initial_cache=_torch_cache(cache),
                           **{n: _t(a) for n, a in src.items()})
    assert np.array_equal(got.starts.numpy(), whole.starts[:, T1:])


@pytest.mark.parametrize("path", PATHS)
def test_plan_varlen_and_empty_cache_equal_reference(path):
    """DLA-8.1 and DLA-2.3: packed sequences and a cache at position 0 (a fresh sequence)."""
    x = random_inputs(8, 1, 30, 2, 3, 2, 4)
    cu = np.array([0, 7, 7, 19, 30])
    cfg = config(4, tau=0.8)
    _same_plan(cfg, path, k=x["k"], cu_seqlens=cu)
    empty = _torch_cache(empty_cache(4, 2, 4, 3, 2))
    with tc_plan.forced_path(path):
        got = tc.make_plan(cfg, k=_t(x["k"]), cu_seqlens=_t(cu), initial_cache=empty)
    assert got.equals(ref_make_plan(cfg, k=x["k"], cu_seqlens=cu))
