"""flash-linear-attention's Triton kernel ``chunk_log_linear_attn``, certified as DLA ``fenwick``.

The GPU counterpart of :mod:`examples.fla_log_linear` (spec DLA-4.3): fla-core
0.6.0's chunked Log-Linear Attention forward and backward, as they are, mapped
onto the DLA call. The kernel's own constraints become claims (DLA-11.6), so
the suite generates every case inside them and the adapter refuses the rest
by name (DLA-9.14):

- the fenwick policy on the gla base only (``CLAIMS["plans"] = "own"``);
- ``K`` a multiple of 64 (its ``BLOCK_K``) and ``V`` a power of two;
- ``1 <= T <= 2**17 - 1`` tokens: its largest level bounds ``T``, and at ``T = 0`` it
  raises ``ValueError: math domain error`` (``math.log(0)`` in its level count; found by
  this suite's ``T = 0`` check on an H200), so ``T = 0`` is claimed unsupported;
- CUDA only; ``level_scales`` are passed in ``q``'s dtype, as the kernel reads
  them; ``cu_seqlens`` is passed through (int64);
- its streaming state (``LogLinearAttentionState``) holds the last chunk's raw
  inputs, not the DLA cache of DLA-7.1, so streaming is not claimed.

float32 matrix products in Triton run in TF32 unless ``TRITON_F32_DEFAULT=ieee``
is set before the kernels compile; certify float32 with it set (TF32 alone
misses the float32 tolerance of DLA-10.1 by far). Certify on a GPU with::

    TRITON_F32_DEFAULT=ieee dla-conformance run --impl examples.fla_chunk_log_linear --device cuda
"""

from __future__ import annotations

import torch

import dla
from dla.impls import torch_cpu
from dla.reference.validation import check_forward_call, check_plan_call, require_own_plan

CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "varlen", "gradients"),
    "dtypes": ("float32", "float16", "bfloat16"),
    "devices": ("cuda",),
    "array": "torch",
    "bases": ("gla",),
    "policies": ("fenwick",),
    "plans": "own",
    "sizes": {"K": {"multiple_of": 64}, "V": {"power_of_two": True},
              "T": {"min": 1, "max": 2**17 - 1}},
}


def make_plan(config: dla.Config, *, k=None, scores=None, initial_cache=None, cu_seqlens=None):
    """The fenwick partition (DLA-4.1), made by torch_cpu on the inputs' device."""
    check_plan_call(config, kind="torch", k=k, scores=scores, initial_cache=initial_cache,
                    cu_seqlens=cu_seqlens, claims=CLAIMS)

    def wide(x):  # torch_cpu plans float32 and float64 keys; a 16-bit key is exact in float32
        return None if x is None or x.dtype == torch.float64 else x.float()

    return torch_cpu.make_plan(config, k=wide(k), scores=wide(scores), cu_seqlens=cu_seqlens)


def forward(q, k, v, g, lam, config: dla.Config, *, beta=None, scores=None, plan=None,
            initial_cache=None, output_final_cache=False, cu_seqlens=None):
    from fla.ops.log_linear_attn import chunk_log_linear_attn

    check_forward_call(q, k, v, g, lam, config, kind="torch", beta=beta, scores=scores,
                       plan=plan, initial_cache=initial_cache,
                       output_final_cache=output_final_cache, cu_seqlens=cu_seqlens,
                       claims=CLAIMS)
    if plan is not None:
        require_own_plan(plan, make_plan(config, k=k, scores=scores, cu_seqlens=cu_seqlens))
    cu = None if cu_seqlens is None else cu_seqlens.to(device=q.device, dtype=torch.int64)
    o, _ = chunk_log_linear_attn(q, k, v, g.float(), lam.to(q.dtype), cu_seqlens=cu,
                                 scale=config.resolved_scale(q.shape[-1]))
    return o, None
