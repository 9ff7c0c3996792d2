"""The execute stage of the float64 reference: recurrent vs masked form, conservation,
reduction to the base models, causality, row independence, and Log-Linear Attention.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from helpers import base_recurrence, config, random_inputs, slice_t
from hypothesis import given
from hypothesis import strategies as st

from dla.reference import forward, make_plan
from dla.reference.policies import fenwick_capacity

TAUS = st.sampled_from([-0.5, 0.0, 0.25, 0.5, 1.0])
POLICIES = st.sampled_from(["dla", "fenwick"])
SCORES = st.sampled_from(["key_cosine", "external"])
RTOL, ATOL = 1e-10, 1e-12


def capacity_for(policy: str, T: int, C: int) -> int:
    """``C`` itself for dla; at least the levels ``T`` positions need for fenwick (DLA-4.2)."""
    return C if policy == "dla" else max(C, fenwick_capacity(T))


# ----------------------------------------------------------------- DLA-5.4
@given(seed=st.integers(0, 2**16), B=st.integers(1, 2), T=st.integers(0, 40), H=st.integers(1, 3),
       K=st.integers(1, 8), V=st.integers(1, 8), C=st.integers(1, 6), tau=TAUS, policy=POLICIES,
       score=SCORES, scale=st.sampled_from([None, 0.5]))
def test_recurrent_equals_masked(seed, B, T, H, K, V, C, tau, policy, score, scale):
    """DLA-5.4: the masked form equals the recurrent form (gla base, fresh sequences)."""
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, B, T, H, K, V, C, score=score)
    cfg = config(C, tau=tau, score=score, policy=policy, scale=scale)
    o_rec, _ = forward(**x, config=cfg)
    o_mask, _ = forward(**x, config=cfg, masked=True)
    assert o_rec.shape == (B, T, H, V) and o_rec.dtype == np.float64
    np.testing.assert_allclose(o_rec, o_mask, rtol=RTOL, atol=ATOL)


def test_masked_form_is_not_trivially_equal_when_labels_matter():
    """Guards the test above: with distinct ``lam`` entries the plan changes the output."""
    x = random_inputs(1, 1, 16, 1, 4, 4, 3)
    o1, _ = forward(**x, config=config(3, tau=0.2))
    o2, _ = forward(**x, config=config(3, tau=1.5))
    assert not np.allclose(o1, o2)


# ----------------------------------------------------------------- DLA-5.5 conservation
@given(seed=st.integers(0, 2**16), B=st.integers(1, 2), T=st.integers(1, 24), H=st.integers(1, 2),
       K=st.integers(1, 6), V=st.integers(1, 6), C=st.integers(1, 5), tau=TAUS, policy=POLICIES,
       base=st.sampled_from(["gla", "delta"]), score=SCORES)
def test_equal_lam_gives_the_single_state_base_model(seed, B, T, H, K, V, C, tau, policy, base,
                                                     score):
    """DLA-5.5: with all ``lam`` entries 1, the output is that of the single-state base model.

    The oracle ``base_recurrence`` writes out DLA-5.1 (gated linear attention)
    and DLA-5.2 (the gated delta rule) independently of the reference.
    """
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, B, T, H, K, V, C, base=base, score=score)
    x["lam"] = np.ones_like(x["lam"])
    o, _ = forward(**x, config=config(C, tau=tau, score=score, policy=policy, base=base))
    want, _ = base_recurrence(x["q"], x["k"], x["v"], x["g"], x.get("beta"), base, K**-0.5)
    np.testing.assert_allclose(o, want, rtol=RTOL, atol=ATOL)


@given(seed=st.integers(0, 2**16), T=st.integers(1, 12), H=st.integers(1, 2), C=st.integers(1, 4),
       tau=TAUS, policy=POLICIES, base=st.sampled_from(["gla", "delta"]), score=SCORES)
def test_sum_of_cached_states_equals_base_state_at_every_prefix(seed, T, H, C, tau, policy, base,
                                                                score):
    """DLA-5.5, DLA-7.1: after every prefix, the cached states sum to the base model's state.

    DLA-5.1, DLA-5.2: the transition is linear, so the sum matches only if it is
    applied to *every* state (a skipped or mis-transitioned state breaks it).
    """
    K, V = 3, 2
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, 1, T, H, K, V, C, base=base, score=score)
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    _, want = base_recurrence(x["q"], x["k"], x["v"], x["g"], x.get("beta"), base, 1.0)
    for t in range(T):
        _, cache = forward(**slice_t(x, 0, t + 1), config=cfg, output_final_cache=True)
        np.testing.assert_allclose(cache.states[0].sum(axis=1), want[0, t], rtol=RTOL, atol=ATOL)
        for h in range(H):  # DLA-7.1: unused slots hold zeros
            assert not cache.states[0, h, int(cache.count[0, h]) :].any()


@given(seed=st.integers(0, 2**16), T=st.integers(1, 30), H=st.integers(1, 2), tau=TAUS,
       base=st.sampled_from(["gla", "delta"]), score=SCORES)
def test_capacity_one_is_the_base_model(seed, T, H, tau, base, score):
    """DLA-5.5: ``C = 1`` is gated linear attention / the gated delta rule, scaled by ``lam[0]``.

    DLA-5.1, DLA-5.2: the oracle is the single-state recurrence of each base.
    """
    K, V = 4, 3
    x = random_inputs(seed, 1, T, H, K, V, 1, base=base, score=score)
    cfg = config(1, tau=tau, score=score, base=base)
    o, _ = forward(**x, config=cfg)
    want, _ = base_recurrence(x["q"], x["k"], x["v"], x["g"], x.get("beta"), base, K**-0.5)
    np.testing.assert_allclose(o, want * x["lam"], rtol=RTOL, atol=ATOL)
    plan = make_plan(cfg, k=x["k"], scores=x.get("scores"))
    assert (plan.count == 1).all() and (plan.starts == 0).all() and (plan.labels == 0).all()


def test_plan_injection_executes_the_given_plan():
    """DLA-6.2: ``forward(plan=P)`` follows ``P``, not the plan of its own scores."""
    x = random_inputs(5, 1, 20, 2, 4, 3, 4)
    other = make_plan(config(4, tau=1.5), k=x["k"])
    o_own, _ = forward(**x, config=config(4, tau=0.1))
    o_inj, _ = forward(**x, config=config(4, tau=0.1), plan=other)
    o_other, _ = forward(**x, config=config(4, tau=1.5))
    np.testing.assert_allclose(o_inj, o_other, rtol=RTOL, atol=ATOL)
    assert not np.allclose(o_inj, o_own)


# ----------------------------------------------------------------- causality
@given(seed=st.integers(0, 2**16), T=st.integers(2, 30), data=st.data(), C=st.integers(1, 5),
       tau=TAUS, policy=POLICIES, base=st.sampled_from(["gla", "delta"]), score=SCORES)
def test_causality(seed, T, data, C, tau, policy, base, score):
    """DLA-3.3, DLA-5: inputs after ``t`` change neither ``o[:t+1]`` nor the plan up to ``t``."""
    t = data.draw(st.integers(0, T - 2))
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, 1, T, 2, 3, 2, C, base=base, score=score)
    y = random_inputs(seed + 1, 1, T, 2, 3, 2, C, base=base, score=score)
    for n in x:
        y[n][:, : t + 1] = x[n][:, : t + 1]
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    ox, _ = forward(**x, config=cfg)
    oy, _ = forward(**y, config=cfg)
    np.testing.assert_array_equal(ox[:, : t + 1], oy[:, : t + 1])
    assert not np.array_equal(ox[:, t + 1 :], oy[:, t + 1 :])
    px = make_plan(cfg, k=x["k"], scores=x.get("scores"))
    py = make_plan(cfg, k=y["k"], scores=y.get("scores"))
    for f in ("boundary", "count", "starts", "labels"):
        np.testing.assert_array_equal(getattr(px, f)[:, : t + 1], getattr(py, f)[:, : t + 1])
    if base == "gla":
        mx, _ = forward(**x, config=cfg, masked=True)
        my, _ = forward(**y, config=cfg, masked=True)
        np.testing.assert_allclose(mx[:, : t + 1], my[:, : t + 1], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------- row independence (DLA-1.1)
@given(seed=st.integers(0, 2**16), B=st.integers(1, 3), H=st.integers(1, 4), T=st.integers(0, 20),
       C=st.integers(1, 4), tau=TAUS, policy=POLICIES, base=st.sampled_from(["gla", "delta"]),
       score=SCORES)
def test_permuting_batch_rows_and_heads_permutes_outputs(seed, B, H, T, C, tau, policy, base,
                                                         score):
    """DLA-1.1: every (batch row, head) pair is independent."""
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, B, T, H, 3, 2, C, base=base, score=score)
    rng = np.random.default_rng(seed)
    pb, ph = rng.permutation(B), rng.permutation(H)
    y = {n: a[pb][:, :, ph] for n, a in x.items()}
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    ox, cx = forward(**x, config=cfg, output_final_cache=True)
    oy, cy = forward(**y, config=cfg, output_final_cache=True)
    np.testing.assert_allclose(oy, ox[pb][:, :, ph], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cy.states, cx.states[pb][:, ph], rtol=RTOL, atol=ATOL)
    px = make_plan(cfg, k=x["k"], scores=x.get("scores"))
    py = make_plan(cfg, k=y["k"], scores=y.get("scores"))
    for f in ("boundary", "count", "starts", "labels"):
        np.testing.assert_array_equal(getattr(py, f), getattr(px, f)[pb][:, :, ph])
    # each row alone gives the same output as inside the batch
    b, h = int(rng.integers(B)), int(rng.integers(H))
    o1, _ = forward(**{n: a[b : b + 1, :, h : h + 1] for n, a in x.items()}, config=cfg)
    np.testing.assert_allclose(o1[0, :, 0], ox[b, :, h], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------- DLA-4.3 Log-Linear Attention
@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13, 16, 33])
def test_fenwick_gla_is_log_linear_attention(T):
    """DLA-4.3: ``policy='fenwick', base='gla'`` equals fla's ``naive_log_linear_attn``."""
    if os.environ.get("CI"):  # CI installs fla-core: there the cross-check must run, not skip
        torch = importlib.import_module("torch")
        naive = importlib.import_module("fla.ops.log_linear_attn.naive")
    else:
        torch = pytest.importorskip("torch")
        naive = pytest.importorskip("fla.ops.log_linear_attn.naive")
    B, H, K, V = 2, 2, 4, 3
    C = int(np.ceil(np.log2(T))) + 1  # the number of levels fla uses
    x = random_inputs(T, B, T, H, K, V, C)
    o, _ = forward(**x, config=config(C, policy="fenwick"))
    t = {n: torch.from_numpy(a) for n, a in x.items()}
    want = naive.naive_log_linear_attn(t["q"], t["k"], t["v"], t["g"], t["lam"], scale=K**-0.5)
    assert want.dtype == torch.float64
    np.testing.assert_allclose(o, want.numpy(), rtol=RTOL, atol=ATOL)


@given(iota=st.lists(st.integers(0, 8).map(lambda i: i / 4), min_size=1, max_size=20),
       C=st.integers(1, 4), tau=st.sampled_from([-0.25, 0.5, 1.0]))
def test_injected_plan_cache_information_uses_own_scores(iota, C, tau):
    """DLA-6.2: with ``plan=P``, the cache's information sums the call's own scores over P."""
    T = len(iota)
    x = random_inputs(0, 1, T, 1, 2, 2, C, score="external")
    x["scores"] = np.array(iota).reshape(1, T, 1)
    other = make_plan(config(C, tau=1.75, score="external"), scores=np.ones((1, T, 1)) * 2.0)
    _, cache = forward(**x, config=config(C, tau=tau, score="external"), plan=other,
                       output_final_cache=True)
    n = int(other.count[0, -1, 0])
    starts = other.starts[0, -1, 0, :n].tolist()
    want = [sum(iota[a:b]) for a, b in zip(starts, [*starts[1:], T], strict=True)]
    assert cache.starts[0, 0, :n].tolist() == starts
    assert cache.info[0, 0, :n].tolist() == want


# ----------------------------------------------------------------- DLA-5.6 closed form
def transition(base: str, g: float, k: np.ndarray, beta: float) -> np.ndarray:
    """``A_t`` of DLA-5.1 / DLA-5.2 as a ``K x K`` matrix."""
    eye = np.eye(k.shape[0])
    return np.exp(g) * (eye if base == "gla" else eye - beta * np.outer(k, k))


def closed_form_states(x: dict, base: str, starts: list[int], t: int, b: int, h: int):
    """``S(t) = sum_{s=a}^{e} Phi(t, s) W_s`` for each segment ``[a, e]`` of ``starts``."""
    k, v, g = x["k"][b, :, h], x["v"][b, :, h], x["g"][b, :, h]
    beta = x["beta"][b, :, h] if base == "delta" else np.ones(len(g))
    out = []
    for a, end in zip(starts, [*starts[1:], t + 1], strict=True):
        S = np.zeros((k.shape[1], v.shape[1]))
        for s in range(a, end):
            phi = np.eye(k.shape[1])  # Phi(t, s) = A_t A_{t-1} ... A_{s+1}
            for r in range(s + 1, t + 1):
                phi = transition(base, g[r], k[r], beta[r]) @ phi
            S += phi @ (beta[s] * np.outer(k[s], v[s]))
        out.append(S)
    return out


@given(seed=st.integers(0, 2**16), T=st.integers(1, 14), C=st.integers(1, 4), tau=TAUS,
       policy=POLICIES, base=st.sampled_from(["gla", "delta"]), score=SCORES,
       cut=st.integers(0, 14))
def test_states_equal_their_closed_form(seed, T, C, tau, policy, base, score, cut):
    """DLA-5.6: each final state is ``sum_s Phi(t, s) W_s`` over its segment only.

    Computed per state from the spec's formula (products of ``A_r``), so a state
    that missed a transition, took a token of its neighbour or was merged
    without summing fails. With a cut, the first call's cache is continued
    (carried matrices stand for the carried tokens and are transitioned too).
    """
    H = 2
    C = capacity_for(policy, T, C)
    x = random_inputs(seed, 1, T, H, 3, 2, C, base=base, score=score)
    cfg = config(C, tau=tau, score=score, policy=policy, base=base)
    cut = min(cut, T)
    _, cache = forward(**slice_t(x, 0, cut), config=cfg, output_final_cache=True)
    _, cache = forward(**slice_t(x, cut, T), config=cfg, initial_cache=cache,
                       output_final_cache=True)
    for h in range(H):
        n = int(cache.count[0, h])
        want = closed_form_states(x, base, cache.starts[0, h, :n].tolist(), T - 1, 0, h)
        np.testing.assert_allclose(cache.states[0, h, :n], np.stack(want), rtol=RTOL, atol=ATOL)
