"""Gradients of the Triton forward: backward by recompute through ``torch_cpu`` (DLA-10.5).

:func:`forward` has the signature of :func:`dla.impls.triton_gpu.api.forward`.

- When no float input requires grad (``q, k, v, g, lam`` and, with a cache,
  ``initial_cache.states``) it *is* ``api.forward``: the Triton kernels, no
  autograd bookkeeping.
- Otherwise the output comes from the same Triton kernels, run on detached
  inputs with the plan made explicit (the caller's ``plan``, or
  ``api.make_plan`` of the same scores, cache and ``cu_seqlens``), so the
  forward and the backward use one discrete plan. The backward recomputes the
  output (and, with ``output_final_cache=True``, the final states) with the
  differentiable :func:`dla.impls.torch_cpu.api.forward`, that plan injected
  (DLA-6.2), on the inputs' device, and returns its ``torch.autograd.grad``
  for ``q, k, v, g, lam`` and the carried ``initial_cache.states``. 16-bit
  inputs are recomputed in float32 and their gradients cast back to the
  input's dtype.

The plan is frozen (DLA-6.2): the gradient is the one of DLA-10.5, taken with
the discrete decisions held fixed, for ``q, k, v, g, lam`` (``k`` only
through the readout, not through the key scores that chose the plan).
``scores`` get no gradient (DLA-10.5 lists no score among the differentiable
inputs), and neither do the final cache's ``prev_key`` and ``info``. The
final cache's ``states`` are differentiable.

Cost: the backward is not a Triton kernel. It is one forward and one autograd
backward of the chunked torch executor on the inputs' device, plus, only when
the final states need gradients, a float64 copy of ``k`` (or ``scores``) to the
host, where torch_cpu computes the token scores, and the executor's activations
held during the backward; its time is not measured. It is correct and certified
(the ``gradients`` level, DLA-12.6, on an H200 too), not fast. The backward is
itself not differentiable (no double backward).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from dla.cache import Cache
from dla.config import Config
from dla.impls.torch_cpu import api as torch_api
from dla.impls.triton_gpu import api
from dla.plan import Plan

_COMPUTE = torch.float32  # the recompute dtype: torch_cpu computes in float32 or float64


def _requires_grad(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad


def _detached(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _detached_cache(cache: Cache | None) -> Cache | None:
    if cache is None:
        return None
    return dataclasses.replace(cache, states=_detached(cache.states))


@dataclass
class _Call:
    """Everything of one call that is not a differentiable tensor (the plan made explicit)."""

    config: Config
    beta: Any
    scores: Any
    plan: Plan
    cache: Cache | None  # states detached; the Function's ``states`` argument replaces them
    output_final_cache: bool
    cu_seqlens: Any
    chunk: int
    final: Cache | None = None  # the Triton final cache, handed from the Function's forward


def _with_states(cache: Cache | None, states: torch.Tensor | None) -> Cache | None:
    return None if cache is None else dataclasses.replace(cache, states=states)


class _TritonWithRecompute(torch.autograd.Function):
    """Outputs ``(o, final states or an empty tensor)``; inputs ``call, q, k, v, g, lam,
    states`` (``states`` the carried cache's, or None)."""

    @staticmethod
    def forward(ctx: Any, call: _Call, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                g: torch.Tensor, lam: torch.Tensor, states: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        o, final = api.forward(q, k, v, g, lam, call.config, beta=call.beta, scores=call.scores,
                               plan=call.plan, initial_cache=_with_states(call.cache, states),
                               output_final_cache=call.output_final_cache,
                               cu_seqlens=call.cu_seqlens, chunk=call.chunk)
        call.final = final
        ctx.call = call
        ctx.save_for_backward(q, k, v, g, lam, states)
        ctx.set_materialize_grads(False)
        if final is None:
            empty = o.new_empty(0)
            ctx.mark_non_differentiable(empty)
            return o, empty
        return o, final.states

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_o: torch.Tensor | None, grad_states: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        wanted = ctx.needs_input_grad[1:]
        grads = _recompute_gradients(ctx.call, saved, wanted, grad_o, grad_states)
        return (None, *grads)


def _recompute_gradients(call: _Call, saved: tuple, wanted: tuple[bool, ...],
                         grad_o: torch.Tensor | None, grad_states: torch.Tensor | None
                         ) -> list[torch.Tensor | None]:
    """DLA-10.5: ``torch.autograd.grad`` of the ``torch_cpu`` recompute, plan frozen."""
    if not any(wanted) or (grad_o is None and grad_states is None):
        return [None] * len(saved)
    with torch.enable_grad():
        leaves = [None if x is None else x.detach().to(_COMPUTE).requires_grad_(w)
                  for x, w in zip(saved, wanted, strict=True)]
        need_states = grad_states is not None and grad_states.numel() > 0
        o, final = torch_api.forward(
            *leaves[:5], call.config, beta=call.beta, scores=call.scores, plan=call.plan,
            initial_cache=_with_states(call.cache, leaves[5]), output_final_cache=need_states,
            cu_seqlens=call.cu_seqlens)
        outputs, cotangents = [], []
        if grad_o is not None:
            outputs.append(o)
            cotangents.append(grad_o.to(o.dtype))
        if need_states:
            assert final is not None and grad_states is not None
            outputs.append(final.states)
            cotangents.append(grad_states.to(final.states.dtype))
        inputs = [x for x, w in zip(leaves, wanted, strict=True) if w and x is not None]
        got = iter(torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True))
    out: list[torch.Tensor | None] = []
    for x, w in zip(saved, wanted, strict=True):
        d = next(got) if w else None
        if w and d is None:  # an input the output does not depend on
            d = torch.zeros_like(x)
        out.append(None if d is None else d.to(x.dtype))
    return out


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
    if not any(_requires_grad(x) for x in (q, k, v, g, lam, states)):
        return api.forward(q, k, v, g, lam, config, beta=beta, scores=scores, plan=plan,
                           initial_cache=initial_cache, output_final_cache=output_final_cache,
                           cu_seqlens=cu_seqlens, chunk=chunk)
    cache = _detached_cache(initial_cache)
    if plan is None:
        plan = api.make_plan(config, k=_detached(k), scores=_detached(scores),
                             initial_cache=cache, cu_seqlens=cu_seqlens, chunk=chunk)
    call = _Call(config, _detached(beta), _detached(scores), plan, cache, output_final_cache,
                 cu_seqlens, chunk)
    o, final_states = _TritonWithRecompute.apply(call, q, k, v, g, lam, states)
    final, call.final = call.final, None  # ctx keeps ``call``: no cycle through an output
    if final is None:
        return o, None
    return o, dataclasses.replace(final, states=final_states)
