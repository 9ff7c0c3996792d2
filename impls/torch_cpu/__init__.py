"""``torch_cpu``: the chunked, vectorized, differentiable CPU implementation of DLA-v1.

Certified against :mod:`dla.reference` by the conformance suite (DLA-6.2,
DLA-10, DLA-11). Two stages (the factoring of DLA-6):

1. **Plan** (:mod:`dla.impls.torch_cpu.plan`). Under ``dla`` a boundary is
   ``fresh or iota_t > tau`` (DLA-3.1), independent of any state, and merges
   happen only at boundaries (DLA-3.4), so the only sequential part is one
   step per boundary event; the information between events is a
   left-to-right fold identical to the reference's running sum, so plans are
   bit-identical, near-ties included. The per-position arrays are a gather of
   the event-time partitions. ``fenwick`` (DLA-4) is a closed form in the
   bits of the position.
2. **Execute** (:mod:`dla.impls.torch_cpu.chunked`). A chunked form for both
   bases: for chunk ``[a, b)`` the states at ``a - 1`` are read out with one
   batched matmul ``Qe @ [S_0 .. S_{C-1}]`` weighted by ``lam_t`` at each old
   state's label at ``t``; the chunk's own tokens by a masked ``[L, L]``
   product weighted by the per-chunk label matrix; the states at ``b - 1`` are
   the membership of the old states in the new partition applied to the
   decayed old states, plus the chunk's tokens grouped by their slot at
   ``b - 1``. The ``gla`` base uses exponentials of in-chunk cumulative-decay
   differences (never of a positive number); the ``delta`` base uses a
   chunked WY/UT form (one unit-triangular solve per chunk; the transition
   ``I - beta k k^T`` is shared by every state, so each old state and each
   token is an *atom* moved by the same chunk operator). All intra-chunk work
   is batched over every chunk; only the chunk recurrence (the inter-chunk
   readout of the states at the chunk start and the state update) loops
   over chunks.
   Backward is torch autograd (``q, k, v, g, beta, lam`` and carried states).

``forward(..., chunk_size=64)`` takes the chunk length as an extra keyword.
Streaming caches (DLA-7.1) have torch fields: ``states``/``prev_key`` in the
compute dtype, ``info`` float64 (decisions of a continuation depend on it),
integer fields int64.
"""

from dla.impls.torch_cpu.api import CLAIMS, DEFAULT_CHUNK_SIZE, forward, make_plan

__all__ = ["CLAIMS", "DEFAULT_CHUNK_SIZE", "forward", "make_plan"]
