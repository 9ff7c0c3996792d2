"""Validation of a ``forward`` call with one device sync for the value rules (DLA-9, DLA-11.7).

The shared :mod:`dla.reference.validation` scans every float input on the host's
orders: one reduction and one device sync per rule and tensor (about 0.7 ms a call
on an H200). Here the value rules of the float inputs (finite, DLA-9.4; ``g <= 0``,
DLA-9.5; external scores ``>= 0``, DLA-9.6) are folded into one Triton reduction
whose result is read once, after the forward kernels are queued
(:meth:`Pending.check`); the structural rules (types, shapes, dtypes, the
configuration) need no device value and are checked first, on the host.

Whenever a call is not one of the plain forms this module recognises, or a value
rule fails, the shared ``check_forward_call`` runs and raises its own error, so
every error a caller sees is the shared module's (DLA-9.13). ``cu_seqlens`` (DLA-9.8)
and a carried cache (DLA-9.9) are checked by the shared public functions on the
host: the row layout needs their values there anyway. An injected plan (DLA-9.10)
takes the whole shared validation: its coarsening rule (DLA-6.4) is a host check.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from dla.cache import Cache
from dla.config import Config
from dla.reference import validation as val

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# bits of the flags word
NONFINITE_Q, NONFINITE_K, NONFINITE_V, NONFINITE_G, POSITIVE_G = 1, 2, 4, 8, 16
NONFINITE_LAM, NONFINITE_SCORES, NEGATIVE_SCORES = 32, 64, 128


@triton.jit
def _flags_of(ptr, blk, n, FIN: tl.constexpr, POS: tl.constexpr, NEG: tl.constexpr,
              BLOCK: tl.constexpr):
    """Flag bits of one block of a flat tensor: ``FIN`` if an entry is NaN or +-inf, ``POS``
    if one is ``> 0``, ``NEG`` if one is ``< 0`` (0 disables a bit)."""
    offs = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(ptr + offs, mask=offs < n, other=0.0)
    if x.dtype.primitive_bitwidth < 32:
        x = x.to(tl.float32)
    bad = tl.max(((x != x) | (tl.abs(x) == float("inf"))).to(tl.int32), axis=0) * FIN
    if POS:
        bad = bad | tl.max((x > 0).to(tl.int32), axis=0) * POS
    if NEG:
        bad = bad | tl.max((x < 0).to(tl.int32), axis=0) * NEG
    return bad


@triton.jit
def value_flags_kernel(q_ptr, k_ptr, v_ptr, g_ptr, lam_ptr, s_ptr, nq, nv, ng, nlam, ns,
                       e0, e1, e2, e3, e4, flags_ptr, BLOCK: tl.constexpr):
    """DLA-9.4 to DLA-9.6 over ``q, k, v, g, lam, scores`` in one launch: programs
    ``[0, e0)`` read ``q``, ``[e0, e1)`` ``k``, and so on; each ORs its bits into
    ``flags``. 16-bit inputs are compared in float32, the others in their dtype."""
    pid = tl.program_id(0)
    if pid < e0:
        bad = _flags_of(q_ptr, pid, nq, 1, 0, 0, BLOCK)
    elif pid < e1:
        bad = _flags_of(k_ptr, pid - e0, nq, 2, 0, 0, BLOCK)
    elif pid < e2:
        bad = _flags_of(v_ptr, pid - e1, nv, 4, 0, 0, BLOCK)
    elif pid < e3:
        bad = _flags_of(g_ptr, pid - e2, ng, 8, 16, 0, BLOCK)
    elif pid < e4:
        bad = _flags_of(lam_ptr, pid - e3, nlam, 32, 0, 0, BLOCK)
    else:
        bad = _flags_of(s_ptr, pid - e4, ns, 64, 0, 128, BLOCK)
    if bad != 0:
        tl.atomic_or(flags_ptr, bad)


_BLOCK = 4096
_pinned = threading.local()


def _host_word(dev: torch.device) -> torch.Tensor:
    """A pinned one-word host buffer per thread and device (the flags are copied there)."""
    key = f"w{dev}"
    w = getattr(_pinned, key, None)
    if w is None:
        w = torch.zeros(1, dtype=torch.int32, pin_memory=True)
        setattr(_pinned, key, w)
    return w


def value_flags(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                lam: torch.Tensor, scores: torch.Tensor | None) -> torch.Tensor:
    """One ``int32`` word on the device: the OR of the flag bits of every value rule.
    The tensors are the contiguous flat copies the kernels read (DLA-1.8: nothing
    outside the views is read)."""
    flags = torch.zeros(1, dtype=torch.int32, device=q.device)
    s = scores if scores is not None else g
    sizes = [q.numel(), k.numel(), v.numel(), g.numel(), lam.numel(),
             scores.numel() if scores is not None else 0]
    ends = []
    acc = 0
    for n in sizes:
        acc += triton.cdiv(n, _BLOCK)
        ends.append(acc)
    if acc:
        value_flags_kernel[(acc,)](q, k, v, g, lam, s, sizes[0], sizes[2], sizes[3], sizes[4],
                                   sizes[5], *ends[:5], flags, BLOCK=_BLOCK)
    return flags


@dataclass
class Pending:
    """The device result of the value rules of a call, read once by :meth:`check`."""

    flags: torch.Tensor | None
    full_check: Callable[[], Any]
    _event: Any = None
    _word: torch.Tensor | None = None

    def start(self) -> Pending:
        """Queue the copy of the flags to the host on CUDA, where :meth:`check` reads it once
        the kernels are queued; elsewhere (the interpreter runs in order) check at once."""
        if self.flags is not None and self.flags.is_cuda:
            self._word = _host_word(self.flags.device)
            self._word.copy_(self.flags, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self.check()
            self.flags = None
        return self

    def check(self) -> None:
        """The one device sync: wait for the flags only (not for the kernels queued after
        them); on any flag, the shared validation raises the error of DLA-9.13."""
        if self.flags is None:
            return
        if self._event is not None and self._word is not None:
            self._event.synchronize()
            word = int(self._word[0])
        else:
            word = int(self.flags[0])
        if word:  # the shared validation decides (and raises); it is the authority
            self.full_check()


def _plain_dtypes(q: torch.Tensor, others: tuple[Any, ...]) -> bool:
    return q.dtype in _FLOATS and all(x.dtype in (q.dtype, torch.float32, torch.float64)
                                      for x in others)


def plain_call(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Any, beta: Any, scores: Any,
               plan: Any, initial_cache: Any, cu_seqlens: Any) -> bool:
    """True iff the call has the structure of DLA-1.1 to DLA-1.3 in the form this module
    checks itself: torch tensors of the right shapes and dtypes, a ``gla`` configuration
    with its score source, no injected plan. Anything else goes to the shared validation."""
    if not isinstance(config, Config) or config.base != "gla" or beta is not None:
        return False
    if plan is not None or not all(isinstance(x, torch.Tensor) for x in (q, k, v, g, lam)):
        return False
    if (initial_cache is not None and not isinstance(initial_cache, Cache)) or (
            cu_seqlens is not None and not isinstance(cu_seqlens, torch.Tensor)):
        return False
    if q.ndim != 4 or v.ndim != 4 or min(q.shape[0], q.shape[2], q.shape[3], v.shape[3]) < 1:
        return False
    B, T, H, _ = q.shape
    if (k.shape != q.shape or v.shape[:3] != q.shape[:3] or g.shape != (B, T, H)
            or lam.shape != (B, T, H, config.capacity)):
        return False
    if k.dtype != q.dtype or v.dtype != q.dtype or not _plain_dtypes(q, (g, lam)):
        return False
    if config.score == "external":
        return (isinstance(scores, torch.Tensor) and scores.shape == (B, T, H)
                and _plain_dtypes(q, (scores,)))
    return scores is None


def check_structure(call_args: dict[str, Any], B: int, T: int, H: int, K: int, V: int,
                    config: Config) -> val.Call:
    """The host rules of a plain call: ``cu_seqlens``, the carried cache and the Fenwick
    capacity, by the shared public functions (DLA-9.8, DLA-9.9, DLA-9.11)."""
    cu_seqlens, cache = call_args["cu_seqlens"], call_args["initial_cache"]
    cu = None if cu_seqlens is None else val.check_cu_seqlens(cu_seqlens, B, T)
    segments = ((0, T),) if cu is None else tuple(
        (int(a), int(b)) for a, b in itertools.pairwise(cu))
    call = val.Call(B, T, H, K, V, config.capacity, segments, cu is not None)
    if cache is not None:
        val.check_cache(cache, call.N, H, call.C, K, V)
    if config.policy == "fenwick":
        pos0 = (torch.zeros(call.N, dtype=torch.int64) if cache is None
                else torch.as_tensor(cache.position).cpu())
        val.check_fenwick_capacity(call.C, pos0.numpy(), call.lengths)
    return call
