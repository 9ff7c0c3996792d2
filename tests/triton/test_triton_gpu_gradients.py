"""Gradients of ``dla.impls.triton_gpu`` (DLA-10.5, DLA-12.6): the Triton backward.

Without CUDA the kernels run under Triton's interpreter (see ``conftest.py``).
The backward of :mod:`dla.impls.triton_gpu.autograd` is checked against central
finite differences of the float64 reference (``dla.reference``) with the plan
frozen, along one random direction per input and per chunk of readouts (DLA-10.7),
for ``q, k, v, g, lam`` and the carried states, through a loss that reads both
``o`` and the final states; and element by element against ``torch_cpu``'s autograd.
``chunk=16`` makes every sequence span several chunks (the last one partial).
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

import dla
import dla.impls.triton_gpu as triton_gpu
from dla import reference as ref
from dla.conformance import certify
from dla.conformance.tolerance import GRADIENT_RMS
from dla.impls.torch_cpu import api as torch_api
from dla.impls.torch_cpu import chunked
from dla.impls.triton_gpu import api, autograd

CHUNK = 16
NAMES = ("q", "k", "v", "g", "lam")


def _inputs(seed: int, B: int, T: int, H: int, K: int, V: int, C: int, device: str,
            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, H, V)), "g": -rng.uniform(0.05, 0.3, (B, T, H)),
         "lam": rng.uniform(0.3, 1.5, (B, T, H, C))}
    return {n: torch.tensor(a, device=device).to(dtype) for n, a in x.items()}


def _cache(seed: int, N: int, H: int, K: int, V: int, cfg: dla.Config, device: str
           ) -> dla.Cache:
    """A carried cache: the reference's final cache of a 10-token prefill per sequence."""
    pre = {n: a.double().numpy() for n, a in _inputs(seed, N, 10, H, K, V, cfg.capacity,
                                                      "cpu").items()}
    _, cache = ref.forward(**pre, config=cfg, output_final_cache=True)
    return dla.Cache(**{f: torch.tensor(np.asarray(getattr(cache, f)), device=device,
                                        dtype=torch.float32 if f in ("states", "info",
                                                                     "prev_key") else None)
                        for f in dla.cache.CACHE_FIELDS})


def _gradients(fwd, x: dict, cfg: dla.Config, cache: dla.Cache | None, R, R2, **kw):
    """Gradients of ``sum(o * R) + sum(final_states * R2)`` for q, k, v, g, lam and the
    carried states."""
    leaves = {n: a.detach().clone().requires_grad_() for n, a in x.items()}
    args = dict(leaves)
    if cache is not None:
        leaves["states"] = cache.states.detach().clone().requires_grad_()
        cache = dataclasses.replace(cache, states=leaves["states"])
    o, final = fwd(**args, config=cfg, initial_cache=cache, output_final_cache=True, **kw)
    loss = (o.double() * R.to(o.device)).sum() + (final.states.double() * R2.to(o.device)).sum()
    loss.backward()
    return o, {n: a.grad for n, a in leaves.items()}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _directions(rng: np.random.Generator, name: str, x: np.ndarray, used: np.ndarray | None
                ) -> list[np.ndarray]:
    """One random direction per chunk of readouts (axis 1) for token inputs; one over the
    used slots for the carried states (unused slots must stay zero, DLA-7.4)."""
    if name == "states":
        return [rng.standard_normal(x.shape) * used[..., None, None]]
    out = []
    for a in range(0, x.shape[1], CHUNK):
        d = np.zeros_like(x)
        d[:, a:a + CHUNK] = rng.standard_normal(d[:, a:a + CHUNK].shape)
        out.append(d)
    return out


def _reference_directional(x: dict[str, np.ndarray], cfg: dla.Config, plan: dla.Plan,
                           cache: dla.Cache | None, R: np.ndarray, R2: np.ndarray,
                           dirs: dict[str, list[np.ndarray]], cu: np.ndarray | None
                           ) -> dict[str, np.ndarray]:
    """Central differences of the float64 reference's loss along each direction."""
    def loss(y: dict[str, np.ndarray]) -> float:
        c = None if cache is None else dataclasses.replace(cache, states=y["states"])
        o, fin = ref.forward(*(y[n] for n in NAMES), cfg, plan=plan, initial_cache=c,
                             output_final_cache=True, cu_seqlens=cu)
        return float((o * R).sum() + (fin.states * R2).sum())

    out = {}
    for name, ds in dirs.items():
        h = 1e-6 * max(1.0, float(np.abs(x[name]).max()))
        out[name] = np.array([(loss({**x, name: x[name] + h * d})
                               - loss({**x, name: x[name] - h * d})) / (2 * h) for d in ds])
    return out


def _check_against_reference(x: dict, cfg: dla.Config, cache: dla.Cache | None, device: str,
                             plan: dla.Plan | None = None, cu: torch.Tensor | None = None,
                             seed: int = 0, bound: float = 1e-4) -> dict:
    """Directional derivatives of the Triton backward == float64 finite differences."""
    rng = np.random.default_rng(seed)
    o_shape = (*x["v"].shape[:3], x["v"].shape[3])
    N = x["q"].shape[0] if cu is None else len(cu) - 1
    H, K, V = x["q"].shape[2], x["q"].shape[3], x["v"].shape[3]
    R = torch.tensor(rng.standard_normal(o_shape))
    R2 = torch.tensor(rng.standard_normal((N, H, cfg.capacity, K, V)))
    kw = {"chunk": CHUNK, "cu_seqlens": cu, "plan": plan}
    _, got = _gradients(triton_gpu.forward, x, cfg, cache, R, R2, **kw)
    xs = {n: _np(a) for n, a in x.items()}
    np_cache = None
    if cache is not None:
        np_cache = dla.Cache(**{f: (_np(getattr(cache, f)) if f in ("states", "info", "prev_key")
                                    else getattr(cache, f).cpu().numpy())
                                for f in dla.cache.CACHE_FIELDS})
        xs["states"] = np_cache.states
    cu_np = None if cu is None else cu.cpu().numpy()
    np_plan = (plan if plan is not None else
               api.make_plan(cfg, k=x["k"], initial_cache=cache, cu_seqlens=cu, chunk=CHUNK))
    np_plan = np_plan.to_numpy()
    used = None if cache is None else (np.arange(cfg.capacity) < np_cache.count[..., None])
    dirs = {n: _directions(rng, n, xs[n], used) for n in xs}
    want = _reference_directional(xs, cfg, np_plan, np_cache, R.numpy(), R2.numpy(), dirs, cu_np)
    for n, ds in dirs.items():
        have = np.array([float((_np(got[n]) * d).sum()) for d in ds])
        rel = np.linalg.norm(have - want[n]) / max(np.linalg.norm(want[n]), 1e-30)
        assert rel <= bound, f"grad {n}: directional rel error {rel:.3g} > {bound}"
        assert np.abs(want[n]).max() > 0, f"grad {n}: the loss does not depend on it"
    return got


def _assert_same_gradients(got: dict, want: dict, rtol: float = 1e-4, atol: float = 1e-5):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(got[n].float().cpu(), want[n].float().cpu(), rtol=rtol,
                                   atol=atol, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("policy", ["dla", "fenwick"])
def test_carried_cache_over_chunks_matches_reference(policy, device):
    """DLA-7.1, DLA-10.5: 2 rows of 40 tokens (3 chunks, the last partial) from a carried
    cache, K != V, loss on o and the final states: q, k, v, g, lam and the carried states
    match float64 differences of the reference and torch_cpu's autograd."""
    C, H = (3, 2) if policy == "dla" else (7, 1)
    cfg = dla.Config(capacity=C, tau=0.5, policy=policy)
    x = _inputs(3, 2, 40, H, 4, 6, C, device)
    cache = _cache(4, 2, H, 4, 6, cfg, device)
    got = _check_against_reference(x, cfg, cache, device, seed=1)
    rng = np.random.default_rng(1)
    R = torch.tensor(rng.standard_normal((2, 40, H, 6)))
    R2 = torch.tensor(rng.standard_normal((2, H, C, 4, 6)))
    _, want = _gradients(torch_api.forward, {n: a.cpu() for n, a in x.items()}, cfg,
                         dla.Cache(**{f: getattr(cache, f).cpu()
                                      for f in dla.cache.CACHE_FIELDS}), R, R2)
    _assert_same_gradients(got, want)


def test_full_capacity_matches_reference(device):
    """C = 16 (the slot tile exactly), every token a boundary (``tau < 0``) so every chunk
    end holds 16 states and merges: gradients against float64 differences."""
    C = 16
    cfg = dla.Config(capacity=C, tau=-1.0)
    x = _inputs(12, 1, 40, 1, 4, 4, C, device)
    _check_against_reference(x, cfg, None, device, seed=4)


def test_varlen_with_empty_sequence_matches_reference(device):
    """DLA-8.1, DLA-10.5: packed sequences (one empty, whose final states are its carried
    states) from an N-row cache, the reference plan injected (DLA-6.2)."""
    C, H = 3, 2
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(5, 1, 45, H, 4, 4, C, device)
    cache = _cache(6, 3, H, 4, 4, cfg, device)
    cu = torch.tensor([0, 18, 18, 45], device=device)
    np_cache = dla.Cache(**{f: getattr(cache, f).cpu().numpy() for f in dla.cache.CACHE_FIELDS})
    plan = ref.make_plan(cfg, k=_np(x["k"]), initial_cache=np_cache, cu_seqlens=cu.cpu().numpy())
    tplan = dla.Plan(*(torch.as_tensor(getattr(plan, f)).to(device)
                       for f in ("boundary", "count", "starts", "labels")))
    _check_against_reference(x, cfg, cache, device, plan=tplan, cu=cu, seed=2)


def test_wide_heads_and_shared_labels_match_reference(device):
    """K = 80 and V = 72 (above the 64-wide tiles of the token kernel) and an injected fenwick
    plan whose labels are all 0, so two states share ``lam_t[0]`` (DLA-6.4 allows it): the
    gradient of ``lam`` sums over them."""
    C = 7
    cfg = dla.Config(capacity=C, tau=0.5, policy="fenwick")
    x = _inputs(7, 1, 34, 1, 80, 72, C, device)
    plan = api.make_plan(cfg, k=x["k"], chunk=CHUNK)
    labels = torch.where(plan.labels >= 0, 0, -1)
    shared = dataclasses.replace(plan, labels=labels)
    got = _check_against_reference(x, cfg, None, device, plan=shared, seed=3)
    assert got["lam"][..., 1:].abs().max() == 0  # only label 0 is read


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_get_gradients_in_their_dtype(dtype, device):
    """DLA-1.3, DLA-10.5: 16-bit q, k, v accumulate in float32 and get 16-bit gradients within
    the dtype's gradient bound of torch_cpu's float32 gradients on the same values; float32
    g and lam get float32 gradients."""
    C = 3
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(5, 1, 40, 2, 8, 8, C, device)
    for n in ("q", "k", "v"):
        x[n] = x[n].to(dtype)
    leaves = {n: a.clone().requires_grad_() for n, a in x.items()}
    o, _ = triton_gpu.forward(**leaves, config=cfg, chunk=CHUNK)
    R = torch.randn(o.shape, generator=torch.Generator().manual_seed(0)).to(device)
    (o.float() * R).sum().backward()
    up = {n: a.detach().float().cpu().requires_grad_() for n, a in x.items()}
    o32, _ = torch_api.forward(**up, config=cfg, plan=api.make_plan(cfg, k=x["k"].cpu()))
    (o32 * R.cpu()).sum().backward()
    bound = GRADIENT_RMS[str(dtype).removeprefix("torch.")] / 2
    for n in NAMES:
        assert leaves[n].grad.dtype == x[n].dtype
        d = leaves[n].grad.float().cpu() - up[n].grad
        assert d.norm() / up[n].grad.norm() < bound, (n, float(d.norm() / up[n].grad.norm()))


def test_streaming_chain_gradients_equal_one_pass(device):
    """DLA-7.2, DLA-10.5: prefill then continuation, the cache's states carried with their
    graph: gradients reach the prefill's inputs and equal the one-pass gradients."""
    C = 3
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(9, 1, 40, 2, 4, 4, C, device)
    leaves = {n: a.clone().requires_grad_() for n, a in x.items()}
    o1, cache = triton_gpu.forward(**{n: a[:, :21] for n, a in leaves.items()}, config=cfg,
                                   output_final_cache=True, chunk=CHUNK)
    o2, _ = triton_gpu.forward(**{n: a[:, 21:] for n, a in leaves.items()}, config=cfg,
                               initial_cache=cache, chunk=CHUNK)
    R = torch.randn(1, 40, 2, 4, generator=torch.Generator().manual_seed(3)).to(device)
    (torch.cat([o1, o2], 1) * R).sum().backward()
    one = {n: a.clone().requires_grad_() for n, a in x.items()}
    o, _ = triton_gpu.forward(**one, config=cfg, chunk=CHUNK)
    (o * R).sum().backward()
    _assert_same_gradients({n: a.grad for n, a in leaves.items()},
                           {n: a.grad for n, a in one.items()})


def test_final_states_alone_and_carried_states_alone(device):
    """The final cache's states are differentiable without ``o`` in the loss, and
    ``initial_cache.states`` requiring grad alone is enough to take the gradient path."""
    C, H = 3, 1
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(8, 1, 20, H, 4, 4, C, device)
    cache = _cache(11, 1, H, 4, 4, cfg, device)
    states = cache.states.clone().requires_grad_()
    x["k"].requires_grad_()
    _, final = triton_gpu.forward(**x, config=cfg, output_final_cache=True, chunk=CHUNK,
                                  initial_cache=dataclasses.replace(cache, states=states))
    final.states.sum().backward()
    c_cpu = dla.Cache(**{f: getattr(cache, f).cpu() for f in dla.cache.CACHE_FIELDS})
    k_ref = x["k"].detach().cpu().clone().requires_grad_()
    s_ref = c_cpu.states.clone().requires_grad_()
    _, ref_final = torch_api.forward(**{**{n: a.detach().cpu() for n, a in x.items()},
                                        "k": k_ref}, config=cfg, output_final_cache=True,
                                     initial_cache=dataclasses.replace(c_cpu, states=s_ref))
    ref_final.states.sum().backward()
    torch.testing.assert_close(x["k"].grad.cpu(), k_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(states.grad.cpu(), s_ref.grad, rtol=1e-4, atol=1e-5)
    assert states.grad.abs().max() > 0


def test_backward_never_calls_torch_cpu(device, monkeypatch):
    """The backward is the Triton kernels: torch_cpu's executor is never reached, with
    or without inputs that require grad."""
    def boom(*args, **kwargs):
        raise AssertionError("torch_cpu called")

    monkeypatch.setattr(torch_api, "forward", boom)
    monkeypatch.setattr(chunked, "execute_chunked", boom)
    cfg = dla.Config(capacity=3, tau=0.5)
    x = _inputs(6, 1, 20, 2, 4, 4, 3, device)
    o, _ = triton_gpu.forward(**x, config=cfg, chunk=CHUNK)
    want, _ = api.forward(**x, config=cfg, chunk=CHUNK)
    assert not o.requires_grad
    torch.testing.assert_close(o, want, rtol=0, atol=0)
    x["v"].requires_grad_()
    o, _ = triton_gpu.forward(**x, config=cfg, chunk=CHUNK)
    torch.testing.assert_close(o.detach(), want, rtol=0, atol=0)
    o.sum().backward()
    assert x["v"].grad is not None and x["v"].grad.abs().max() > 0


def test_certified_gradients_level(device):
    """DLA-12.6: the ``gradients`` level (finite differences of the reference) passes."""
    report = certify("triton_gpu", levels=["gradients"], dtype="float32", device=device)
    failed = [f"{r.level} {r.clause} {r.check}: {r.detail}" for r in report.results
              if not r.passed]
    assert report.passed, "\n".join(failed)
    assert any(r.level == "gradients" for r in report.results)


def test_broken_backward_is_caught_by_the_gradients_level(device, monkeypatch):
    """The ``gradients`` level detects a backward that drops the ``lam`` gradient."""
    real = autograd.backward

    def drop_lam(*args, **kwargs):
        grads = list(real(*args, **kwargs))
        grads[4] = torch.zeros_like(grads[4])
        return tuple(grads)

    monkeypatch.setattr(autograd, "backward", drop_lam)
    broken = types.SimpleNamespace(forward=triton_gpu.forward, make_plan=triton_gpu.make_plan,
                                   CLAIMS={**triton_gpu.CLAIMS, "policies": ("dla",)})
    report = certify(broken, levels=["gradients"], dtype="float32", device=device)
    failed = [r for r in report.results if not r.passed]
    assert not report.passed
    assert failed and all("grad lam" in r.detail for r in failed), [r.detail for r in failed]
