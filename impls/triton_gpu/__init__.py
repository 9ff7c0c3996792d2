"""Chunked Triton kernels for the DLA-v1 forward and backward, ``gla`` base (DLA-3 to DLA-8,
DLA-10.5, DLA-11).

- :mod:`dla.impls.triton_gpu.plan_kernel`: token scores, DLA scan kernel, Fenwick partition
- :mod:`dla.impls.triton_gpu.forward_kernels`: state pass and output kernels (chunked)
- :mod:`dla.impls.triton_gpu.backward_kernels`: reverse state-gradient pass and per-chunk
  ``dq, dk, dv, dg, dlam`` (plan frozen, DLA-6.2)
- :mod:`dla.impls.triton_gpu.checks`: the value rules of DLA-9 in one device reduction
- :mod:`dla.impls.triton_gpu.api`: ``forward``, ``make_plan``: caches, varlen, plan injection
- :mod:`dla.impls.triton_gpu.rows`: where each (sequence, head) row and chunk lives
- :mod:`dla.impls.triton_gpu.autograd`: the exported ``forward``: ``api.forward``, made
  differentiable by the Triton backward (DLA-10.5)

Without inputs that require grad, ``forward`` is the Triton forward alone; with them, the
backward is Triton kernels too (no recompute through another implementation).

On a machine without CUDA the same kernels run on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``, set before ``triton`` is imported); there the
16-bit matrix products are upcast, since the interpreter's own are wrong (triton 3.6).
Speed on an H200 and what limits it: ``benchmarks/triton_gpu.md``.
"""

import os

from dla.impls.triton_gpu.api import make_plan
from dla.impls.triton_gpu.autograd import forward

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "streaming", "varlen", "gradients"),
    "dtypes": ("float32", "float16", "bfloat16"),
    "devices": ("cpu",) if _INTERPRET else ("cuda",),
    "array": "torch",
    "bases": ("gla",),
}

__all__ = ["CLAIMS", "forward", "make_plan"]
