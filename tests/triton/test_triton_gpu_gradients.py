"""Gradients of ``dla.impls.triton_gpu`` (DLA-10.5, DLA-12.6): recompute through ``torch_cpu``.

Without CUDA the forward kernels run under Triton's interpreter (see
``conftest.py``). The backward of :mod:`dla.impls.triton_gpu.autograd` is the
autograd of :mod:`dla.impls.torch_cpu` with the plan frozen (DLA-6.2), so its
gradients must equal torch_cpu's own on the same inputs, carried states and
final states included, and pass the conformance engine's ``gradients`` level
(finite differences of the float64 reference). Shapes stay small.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

import dla
import dla.impls.triton_gpu as triton_gpu
from dla.conformance import certify
from dla.impls.torch_cpu import api as torch_api
from dla.impls.triton_gpu import api, autograd

CHUNK = 16
NAMES = ("q", "k", "v", "g", "lam")


def _inputs(seed: int, B: int, T: int, H: int, K: int, C: int, device: str,
            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, H, K)), "g": -rng.uniform(0.05, 0.3, (B, T, H)),
         "lam": rng.uniform(0.3, 1.5, (B, T, H, C))}
    return {n: torch.tensor(a, device=device).to(dtype) for n, a in x.items()}


def _cache(seed: int, N: int, H: int, K: int, C: int, cfg: dla.Config, device: str) -> dla.Cache:
    """A carried cache: the torch_cpu final cache of a 10-token prefill per sequence."""
    pre = _inputs(seed, N, 10, H, K, C, "cpu")
    _, cache = torch_api.forward(**pre, config=cfg, output_final_cache=True)
    assert cache is not None
    return dla.Cache(**{f: getattr(cache, f).to(device) for f in dla.cache.CACHE_FIELDS})


def _gradients(fwd, x: dict, cfg: dla.Config, cache: dla.Cache | None, **kw):
    """Gradients of ``sum(o * R) + sum(final_states * R2)`` for q, k, v, g, lam and the
    carried states, with fixed random projections ``R``, ``R2``."""
    leaves = {n: a.detach().clone().requires_grad_() for n, a in x.items()}
    args = dict(leaves)
    if cache is not None:
        leaves["states"] = cache.states.detach().clone().requires_grad_()
        cache = dataclasses.replace(cache, states=leaves["states"])
    o, final = fwd(**args, config=cfg, initial_cache=cache, output_final_cache=True, **kw)
    gen = torch.Generator().manual_seed(7)
    R = torch.randn(o.shape, generator=gen).to(o.device)
    R2 = torch.randn(final.states.shape, generator=gen).to(o.device)
    loss = (o.float() * R).sum() + (final.states.float() * R2).sum()
    loss.backward()
    return o, {n: a.grad for n, a in leaves.items()}


def _assert_same_gradients(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(got[n].float(), want[n].float(), rtol=rtol, atol=atol,
                                   msg=lambda m, n=n: f"grad {n}: {m}")


def test_certified_gradients_level(device):
    """DLA-12.6: the ``gradients`` level (finite differences of the reference) passes."""
    report = certify("triton_gpu", levels=["gradients"], dtype="float32", device=device)
    failed = [f"{r.level} {r.clause} {r.check}: {r.detail}" for r in report.results
              if not r.passed]
    assert report.passed, "\n".join(failed)
    assert any(r.level == "gradients" for r in report.results)


def test_varlen_gradients_equal_torch_cpu(device):
    """DLA-8.1, DLA-10.5: packed sequences (one empty) from an N-row carried cache:
    gradients of o and the final states, carried states included, equal torch_cpu's."""
    C, H, K = 3, 2, 4
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(1, 1, 40, H, K, C, device)
    cache = _cache(2, 3, H, K, C, cfg, device)
    cu = torch.tensor([0, 18, 18, 40], device=device)
    o, got = _gradients(triton_gpu.forward, x, cfg, cache, cu_seqlens=cu, chunk=CHUNK)
    o_ref, want = _gradients(torch_api.forward, x, cfg, cache, cu_seqlens=cu)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    _assert_same_gradients(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["dla", "fenwick"])
def test_carried_cache_gradients_equal_torch_cpu(policy, device):
    """DLA-7.1, DLA-10.5: a continuation from a carried cache over several chunks: gradients
    for q, k, v, g, lam and the carried states equal torch_cpu's."""
    C, H, K = (3, 2, 4) if policy == "dla" else (7, 1, 4)
    cfg = dla.Config(capacity=C, tau=0.5, policy=policy)
    x = _inputs(3, 2, 36, H, K, C, device)
    cache = _cache(4, 2, H, K, C, cfg, device)
    _, got = _gradients(triton_gpu.forward, x, cfg, cache, chunk=CHUNK)
    _, want = _gradients(torch_api.forward, x, cfg, cache)
    _assert_same_gradients(got, want, rtol=1e-4, atol=1e-5)
    assert got["states"].abs().max() > 0  # the carried states do reach the loss


def test_half_inputs_get_gradients_in_their_dtype(device):
    """DLA-1.3: bfloat16 inputs are recomputed in float32; gradients come back in bfloat16,
    equal to torch_cpu's float32 gradients on the same (upcast) inputs, rounded."""
    C = 3
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(5, 1, 24, 2, 8, C, device, dtype=torch.bfloat16)
    leaves = {n: a.clone().requires_grad_() for n, a in x.items()}
    o, _ = triton_gpu.forward(**leaves, config=cfg, chunk=CHUNK)
    o.float().sum().backward()
    up = {n: a.detach().float().requires_grad_() for n, a in x.items()}
    plan = api.make_plan(cfg, k=x["k"], chunk=CHUNK)
    o32, _ = torch_api.forward(**up, config=cfg, plan=plan)
    o32.sum().backward()
    for n in NAMES:
        assert leaves[n].grad.dtype == torch.bfloat16
        torch.testing.assert_close(leaves[n].grad.float(), up[n].grad, rtol=2e-2, atol=2e-2)


def test_no_grad_inputs_take_the_triton_path(device, monkeypatch):
    """Without inputs that require grad, ``forward`` is ``api.forward``: no recompute."""
    C = 3
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(6, 1, 20, 2, 4, C, device)

    def boom(*args, **kwargs):
        raise AssertionError("torch_cpu recompute called")

    monkeypatch.setattr(torch_api, "forward", boom)
    o, _ = triton_gpu.forward(**x, config=cfg, chunk=CHUNK)
    want, _ = api.forward(**x, config=cfg, chunk=CHUNK)
    assert not o.requires_grad
    torch.testing.assert_close(o, want, rtol=1e-6, atol=1e-6)
    # the patched function is the one the backward uses: with grad it is reached
    x["v"].requires_grad_()
    o, _ = triton_gpu.forward(**x, config=cfg, chunk=CHUNK)
    assert o.requires_grad
    with pytest.raises(AssertionError, match="recompute called"):
        o.sum().backward()


def test_streaming_chain_gradients_equal_one_pass(device):
    """DLA-7.2, DLA-10.5: prefill then continuation, the cache's states carried with their
    graph: gradients reach the prefill's inputs and equal the one-pass gradients."""
    C = 3
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(9, 1, 40, 2, 4, C, device)
    leaves = {n: a.clone().requires_grad_() for n, a in x.items()}
    o1, cache = triton_gpu.forward(**{n: a[:, :21] for n, a in leaves.items()}, config=cfg,
                                   output_final_cache=True, chunk=CHUNK)
    o2, _ = triton_gpu.forward(**{n: a[:, 21:] for n, a in leaves.items()}, config=cfg,
                               initial_cache=cache, chunk=CHUNK)
    R = torch.randn(1, 40, 2, 4, generator=torch.Generator().manual_seed(3)).to(device)
    (torch.cat([o1, o2], 1) * R).sum().backward()
    ref = {n: a.clone().requires_grad_() for n, a in x.items()}
    o, _ = torch_api.forward(**ref, config=cfg)
    (o * R).sum().backward()
    _assert_same_gradients({n: a.grad for n, a in leaves.items()},
                           {n: a.grad for n, a in ref.items()}, rtol=1e-4, atol=1e-5)


def test_final_states_without_o_gradient(device):
    """The final cache's states are differentiable on their own (grad of o unused)."""
    C, H, K = 3, 1, 4
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(8, 1, 20, H, K, C, device)
    x["k"].requires_grad_()
    _, final = triton_gpu.forward(**x, config=cfg, output_final_cache=True, chunk=CHUNK)
    final.states.sum().backward()
    k_ref = x["k"].detach().clone().requires_grad_()
    _, ref_final = torch_api.forward(**{**x, "k": k_ref}, config=cfg, output_final_cache=True)
    ref_final.states.sum().backward()
    torch.testing.assert_close(x["k"].grad, k_ref.grad, rtol=1e-4, atol=1e-5)


def test_broken_backward_is_caught_by_the_gradients_level(device, monkeypatch):
    """The ``gradients`` level detects a backward that drops the ``lam`` gradient."""
    real = autograd._recompute_gradients

    def drop_lam(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads[4] = None if grads[4] is None else torch.zeros_like(grads[4])
        return grads

    monkeypatch.setattr(autograd, "_recompute_gradients", drop_lam)
    broken = types.SimpleNamespace(forward=triton_gpu.forward, make_plan=triton_gpu.make_plan,
                                   CLAIMS={**triton_gpu.CLAIMS, "policies": ("dla",)})
    report = certify(broken, levels=["gradients"], dtype="float32", device=device)
    failed = [r for r in report.results if not r.passed]
    assert not report.passed
    assert failed and all("grad lam" in r.detail for r in failed), [r.detail for r in failed]


def test_carried_states_alone_take_the_gradient_path(device):
    """``initial_cache.states`` requiring grad is enough to leave the fast path (DLA-7.1)."""
    C, H, K = 3, 1, 4
    cfg = dla.Config(capacity=C, tau=0.5)
    x = _inputs(10, 1, 20, H, K, C, device)
    cache = _cache(11, 1, H, K, C, cfg, device)
    states = cache.states.clone().requires_grad_()
    o, _ = triton_gpu.forward(**x, config=cfg, chunk=CHUNK,
                              initial_cache=dataclasses.replace(cache, states=states))
    assert o.requires_grad
    o.sum().backward()
    ref_states = cache.states.clone().requires_grad_()
    o_ref, _ = torch_api.forward(**x, config=cfg,
                                 initial_cache=dataclasses.replace(cache, states=ref_states))
    o_ref.sum().backward()
    assert states.grad.abs().max() > 0
    torch.testing.assert_close(states.grad, ref_states.grad, rtol=1e-4, atol=1e-5)
