"""Gradients of the Triton forward: a chunked Triton backward, plan frozen (DLA-6.2, DLA-10.5).

:func:`forward` has the signature of :func:`dla.impls.triton_gpu.api.forward`.

- When no float input requires grad (``q, k, v, g, lam`` and, with a cache,
  ``initial_cache.states``), or grad mode is off, it *is* ``api.forward``.
- Otherwise the forward kernels run once on detached inputs, keeping their state
  snapshots, with the plan the call executes (the injected ``plan``, or the one
  the device scan makes for the call's scores, cache and ``cu_seqlens``): that
  discrete plan is what the backward differentiates through, held fixed.
  The backward (:mod:`backward_kernels`) runs the reverse recurrence of the
  state gradients over the chunks, then every chunk's ``dq, dk, dv, dlam`` and
  ``dG = q . dq - k . dk`` in parallel, and ``dg`` as the reverse cumulative sum of
  ``dG`` over each sequence. 16-bit inputs accumulate in float32 and get their
  gradients in their own dtype (DLA-1.3); ``g``, ``lam`` and the carried states
  get theirs in their own dtypes.

The gradient is the one of DLA-10.5, taken with the discrete decisions held
fixed, for ``q, k, v, g, lam`` (``k`` only through the readout, not through the
key scores that chose the plan) and the carried ``initial_cache.states``.
``scores`` get no gradient (DLA-10.5 lists no score among the differentiable
inputs), and neither do the final cache's ``prev_key`` and ``info`` or the
carried cache's other fields. The final cache's ``states`` are differentiable.
The backward is itself not differentiable (no double backward). Memory: the
forward keeps its state snapshots (``[chunks, H, C, K, V]`` in the snapshot
dtype) until the backward, which allocates as many again for the state gradients.
No torch fallback: every call the forward accepts is differentiated by the Triton
kernels (``delta``, float64 and the sizes of ``api`` are refused by the forward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from dla.cache import Cache
from dla.config import Config
from dla.impls.triton_gpu import api
from dla.impls.triton_gpu.backward_kernels import (
    gate_gradient,
    launch_dstate_pass,
    launch_token_grads,
)
from dla.impls.triton_gpu.forward_kernels import snapshot_dtype
from dla.plan import Plan


def _requires_grad(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad


def _detached(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _detached_cache(cache: Cache | None) -> Cache | None:
    if cache is None:
        return None
    return dataclasses.replace(cache, states=_detached(cache.states))


def _flat(x: torch.Tensor, prep: api.Prepared) -> torch.Tensor:
    """A gradient ``[B, T, H, D]`` as the kernels' contiguous ``[B * T, H, D]``."""
    B, T, H = prep.shape[:3]
    return x.reshape(B * T, H, x.shape[-1]).contiguous()


def _final_gradient(prep: api.Prepared, grad_final: torch.Tensor | None) -> torch.Tensor | None:
    """The gradient of the final states, float32, zero in unused slots (DLA-7.1); None if
    the final states did not reach the loss."""
    if grad_final is None or grad_final.numel() == 0:
        return None
    count = api.final_count(prep)
    used = torch.arange(grad_final.shape[2], device=grad_final.device) < count[..., None]
    return torch.where(used[..., None, None], grad_final.float(), 0.0)


def backward(prep: api.Prepared, h: torch.Tensor, final: torch.Tensor,
             grad_o: torch.Tensor | None, grad_final: torch.Tensor | None
             ) -> tuple[torch.Tensor, ...]:
    """DLA-10.5: ``dq, dk, dv, dg, dlam`` flat ``[B * T, H, ...]`` and the gradient of the
    carried states ``[N, H, C, K, V]`` float32 (zero in the carried cache's unused slots)."""
    f, rows, plan = prep.flat, prep.rows, prep.plan
    B, T, H, K, V = prep.shape
    C = prep.config.capacity
    dev = f["q"].device
    do = (torch.zeros((B * T, H, V), dtype=f["q"].dtype, device=dev) if grad_o is None
          else _flat(grad_o.to(f["q"].dtype), prep))
    dfinal = _final_gradient(prep, grad_final)
    dfin = dfinal if dfinal is not None else torch.zeros_like(final)
    dh = torch.empty((rows.n_snapshots, H, C, K, V), dtype=snapshot_dtype(f["q"].dtype),
                     device=dev)
    nt = (rows.lens.long() + rows.chunk - 1) // rows.chunk
    dh[rows.hofs.long() + nt] = dfin.to(dh.dtype)  # place NT_n: the final states' gradient
    dstates = launch_dstate_pass(f["q"], do, f["g"], f["lam"], plan, rows, prep.prev, dh, dfin,
                                 prep.scale)
    dq, dk, dv, dlam, dG = launch_token_grads(f["q"], f["k"], f["v"], f["g"], f["lam"], do, plan,
                                              rows, prep.prev, h, dh, prep.scale,
                                              f["lam"].dtype)
    final_term = None if dfinal is None else (dfinal * final).sum((2, 3, 4))
    dg = gate_gradient(dG, rows, B, prep.call.packed, final_term)
    used0 = torch.arange(C, device=dev) < prep.init[0].long()[..., None]
    dstates = torch.where(used0[..., None, None], dstates, 0.0)
    return dq, dk, dv, dg, dlam, dstates


class _TritonFunction(torch.autograd.Function):
    """Outputs ``(o, final states)``; inputs ``prep, q, k, v, g, lam, states`` (``states``
    the carried cache's, or None). ``prep`` holds the detached, flattened inputs."""

    @staticmethod
    def forward(ctx: Any, prep: api.Prepared, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor, g: torch.Tensor, lam: torch.Tensor,
                states: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        states0 = (None if states is None else
                   states.detach().to(q.device, torch.float32).contiguous())  # DLA-1.8
        o, final, h = api.execute(prep, states0, keep_snapshots=True)
        ctx.prep, ctx.h = prep, h
        ctx.inputs = [(x.shape, x.dtype, x.device) if x is not None else None
                      for x in (q, k, v, g, lam, states)]
        ctx.save_for_backward(final)
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_o: torch.Tensor | None, grad_final: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...]:
        (final,) = ctx.saved_tensors
        wanted = ctx.needs_input_grad[1:]
        if not any(wanted) or (grad_o is None and grad_final is None):
            return (None,) * 7
        grads = backward(ctx.prep, ctx.h, final, grad_o, grad_final)
        out: list[torch.Tensor | None] = [None]
        for d, w, meta in zip(grads, wanted, ctx.inputs, strict=True):
            if not w or meta is None:
                out.append(None)
                continue
            shape, dtype, device = meta
            out.append(d.reshape(shape).to(device=device, dtype=dtype))
        return tuple(out)


def forward(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, beta: Any = None,
            scores: Any = None, plan: Plan | None = None, initial_cache: Cache | None = None,
            output_final_cache: bool = False, cu_seqlens: Any = None,
            chunk: int = api.CHUNK) -> tuple[torch.Tensor, Cache | None]:
    """DLA-5, DLA-11.1: :func:`dla.impls.triton_gpu.api.forward`, differentiable (DLA-10.5).

    Gradients flow to ``q, k, v, g, lam`` and ``initial_cache.states``, and from ``o``
    and (with ``output_final_cache=True``) the final cache's ``states``, with the plan
    frozen (DLA-6.2); ``scores`` get none (see the module docstring). Without any input
    that requires grad this is exactly ``api.forward``.
    """
    states = None if initial_cache is None else initial_cache.states
    if not torch.is_grad_enabled() or not any(
            _requires_grad(x) for x in (q, k, v, g, lam, states)):
        return api.forward(q, k, v, g, lam, config, beta=beta, scores=scores, plan=plan,
                           initial_cache=initial_cache, output_final_cache=output_final_cache,
                           cu_seqlens=cu_seqlens, chunk=chunk)
    cache = _detached_cache(initial_cache)
    prep = api.prepare(*(_detached(x) for x in (q, k, v, g, lam)), config, beta=_detached(beta),
                       scores=_detached(scores), plan=plan, initial_cache=cache,
                       output_final_cache=output_final_cache, cu_seqlens=cu_seqlens,
                       chunk=chunk)
    o, final_states = _TritonFunction.apply(prep, q, k, v, g, lam, states)
    final = api.final_cache(prep, final_states) if output_final_cache else None
    prep.pending.check()
    return o, final
