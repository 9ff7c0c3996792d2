"""torch_cpu plan stage: exact parity with the reference (DLA-3, DLA-4, DLA-6.2, DLA-7, DLA-8).

Plans are compared field by field with ``Plan.equals`` (exact), including
inputs made of exact ties (dyadic scores), near-ties that a cumulative-sum
difference would break differently from the reference's running sums
(constant non-dyadic scores), and repeated keys at ``tau = 0``.
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
from dla.reference import empty_cache
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan


def _t(x):
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x))


def _torch_cache(c: Cache) -> Cache:
    return Cache(**{f: torch.from_numpy(np.ascontiguousarray(getattr(c, f)))
                    for f in ("states", "info", "starts", "labels", "count", "prev_key",
                              "position")})


def _same_plan(cfg, **kw):
    got = tc.make_plan(cfg, **{n: _t(x) if isinstance(x, np.ndarray) else x for n, x in kw.items()})
    want = ref_make_plan(cfg, **kw)
    assert isinstance(got.starts, torch.Tensor) and got.starts.dtype == torch.int64
    assert got.boundary.dtype == torch.bool
    assert got.equals(want)
    return got


@given(seed=st.integers(0, 10_000), T=st.integers(0, 40), C=st.integers(1, 6),
       tau=st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 3.0]), B=st.integers(1, 2),
       H=st.integers(1, 3))
def test_dla_plan_equals_reference_on_dyadic_ties(seed, T, C, tau, B, H):
    x = random_inputs(seed, B, T, H, 2, 2, C, score="external")
    _same_plan(config(C, tau=tau, score="external"), scores=x["scores"])


@given(seed=st.integers(0, 10_000), T=st.integers(1, 40), C=st.integers(1, 6),
       tau=st.sampled_from([0.0, 0.3, 0.9, 1.2]))
def test_dla_plan_equals_reference_key_cosine(seed, T, C, tau):
    x = random_inputs(seed, 2, T, 2, 3, 2, C)
    _same_plan(config(C, tau=tau), k=x["k"])


@pytest.mark.parametrize("value", [0.1, 0.3, 0.7, 1.0 / 3.0])
@pytest.mark.parametrize("tau", [0.05, 0.25, 0.65, 0.9])
def test_dla_plan_running_sums_break_near_ties_like_the_reference(value, tau):
    """Constant non-dyadic scores: segment sums like 0.1 + 0.1 + 0.1 tie or not only in the
    order the reference adds them (DLA-3.2, DLA-3.4)."""
    rng = np.random.default_rng(3)
    s = np.full((1, 64, 2, 1), value)[..., 0]
    s[:, ::5] = value * 3  # periodic boundaries of different segment lengths
    s[:, 1, 1] = rng.uniform(0, 2)
    for C in (1, 2, 3, 5):
        _same_plan(config(C, tau=tau, score="external"), scores=s)


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


@pytest.mark.parametrize("policy", ["dla", "fenwick"])
@pytest.mark.parametrize("score", ["key_cosine", "external"])
def test_plan_continues_a_reference_cache(policy, score):
    """DLA-7.2: a cache written by the reference is continued with the same decisions."""
    C, T1, T2 = 6, 11, 17
    x = random_inputs(5, 1, T1 + T2, 2, 3, 2, C, score=score)
    cfg = config(C, tau=0.9, score=score, policy=policy)
    first = {n: a[:, :T1] for n, a in x.items()}
    _, cache = ref_forward(**first, config=cfg, output_final_cache=True)
    src = {"k": x["k"][:, T1:]} if score == "key_cosine" else {"scores": x["scores"][:, T1:]}
    _same_plan(cfg, initial_cache=_torch_cache(cache), **src)
    whole = ref_make_plan(cfg, **({"k": x["k"]} if score == "key_cosine" else
                                  {"scores": x["scores"]}))
    got = tc.make_plan(cfg, initial_cache=_torch_cache(cache),
                       **{n: _t(a) for n, a in src.items()})
    assert np.array_equal(got.starts.numpy(), whole.starts[:, T1:])


def test_plan_varlen_and_empty_cache_equal_reference():
    """DLA-8.1 and DLA-2.3: packed sequences and a cache at position 0 (a fresh sequence)."""
    x = random_inputs(8, 1, 30, 2, 3, 2, 4)
    cu = np.array([0, 7, 7, 19, 30])
    cfg = config(4, tau=0.8)
    _same_plan(cfg, k=x["k"], cu_seqlens=cu)
    empty = _torch_cache(empty_cache(4, 2, 4, 3, 2))
    got = tc.make_plan(cfg, k=_t(x["k"]), cu_seqlens=_t(cu), initial_cache=empty)
    assert got.equals(ref_make_plan(cfg, k=x["k"], cu_seqlens=cu))
