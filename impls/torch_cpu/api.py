"""Public entry points of ``torch_cpu``: ``make_plan`` and ``forward`` (spec DLA-11.1).

Arguments are torch tensors in the ``[B, T, H, ...]`` layout (DLA-1.1);
internally each (sequence, head) pair is a row. Validation is
:mod:`dla.reference.validation` (DLA-9); caches (DLA-7) and ``cu_seqlens``
(DLA-8) are handled here, once, for both bases and both policies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dla.cache import Cache
from dla.config import Config
from dla.impls.torch_cpu.chunked import execute_chunked
from dla.impls.torch_cpu.plan import Partition, RowPlan, run_policy
from dla.plan import Plan
from dla.reference import validation as val
from dla.reference.scores import token_scores

DEFAULT_CHUNK_SIZE = 64

#: What torch_cpu claims (DLA-11.2, DLA-11.6): the whole spec in float32 and float64.
CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "streaming", "varlen", "gradients", "golden"),
    "dtypes": ("float32", "float64"),
    "devices": ("cpu",),
    "array": "torch",
}
#: What its validation accepts: the claims on any device. Every tensor is made on the inputs'
#: device, so triton_gpu's backward recompute runs it on CUDA; it is certified on the CPU.
_ACCEPTS = {**CLAIMS, "devices": ("cpu", "cuda")}


# ----------------------------------------------------------------- layout helpers
def to_rows(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, ...] -> [B * H, T, ...]``."""
    B, T, H = x.shape[:3]
    return x.transpose(1, 2).reshape(B * H, T, *x.shape[3:])


def from_rows(x: torch.Tensor, B: int, H: int) -> torch.Tensor:
    """``[B * H, T, ...] -> [B, T, H, ...]``."""
    return x.reshape(B, H, *x.shape[1:]).transpose(1, 2)


def _np64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, np.float64)


def _npint(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.int64).numpy()
    return np.asarray(x, np.int64)


@dataclass
class _Carried:
    """The carried cache of one group of rows (or a fresh start)."""

    part: Partition
    prev_key: np.ndarray | None  # [R, K] float64, for DLA-2.3
    states: torch.Tensor | None  # [R, C, K, V] or None (zeros)
    prev_key_t: torch.Tensor | None  # the cache's own prev_key rows, returned when T == 0
    labels: np.ndarray  # [R, C] the cache's labels (returned unchanged when T == 0)


def _carried(cache: Cache | None, n: slice, H: int, C: int) -> _Carried:
    if cache is None:
        R = (n.stop - n.start) * H
        return _Carried(Partition.fresh(R, C), None, None, None, np.full((R, C), -1, np.int64))
    part = Partition(
        count=_npint(cache.count[n]).reshape(-1),
        starts=_npint(cache.starts[n]).reshape(-1, C),
        info=_np64(cache.info[n]).reshape(-1, C),
        position=np.repeat(_npint(cache.position[n]), H),
    )
    pk = torch.as_tensor(cache.prev_key[n])
    states = torch.as_tensor(cache.states[n])
    return _Carried(part, _np64(pk).reshape(-1, pk.shape[-1]),
                    states.reshape(-1, C, *states.shape[3:]), pk.reshape(-1, pk.shape[-1]),
                    _npint(cache.labels[n]).reshape(-1, C))


def _scores(config: Config, k_rows: torch.Tensor | None, s_rows: torch.Tensor | None,
            car: _Carried) -> np.ndarray:
    """DLA-2: ``iota [R, T]`` in float64 (see :mod:`dla.impls.torch_cpu.plan`); a cache at
    position 0 is a fresh sequence (DLA-2.3)."""
    external = config.score == "external"  # then k is not read: skip its float64 copy
    return token_scores(config.score, None if k_rows is None or external else _np64(k_rows),
                        None if s_rows is None else _np64(s_rows), car.prev_key,
                        carried=car.part.position > 0)


# ----------------------------------------------------------------- planning
def make_plan(config: Config, *, k: Any = None, scores: Any = None,
              initial_cache: Cache | None = None, cu_seqlens: Any = None) -> Plan:
    """DLA-6.1, DLA-11.1: every discrete decision, as a :class:`dla.Plan` of torch int64 tensors."""
    call = val.check_plan_call(config, kind="torch", k=k, scores=scores,
                               initial_cache=initial_cache, cu_seqlens=cu_seqlens,
                               claims=_ACCEPTS)
    B, H, C = call.B, call.H, call.C
    k_r = None if k is None else to_rows(k)
    s_r = None if scores is None else to_rows(scores)
    dev = (scores if config.score == "external" else k).device
    parts = []
    for i, (a, b) in enumerate(call.segments):
        n = call.cache_rows(i)
        car = _carried(initial_cache, n, H, C)
        iota = _scores(config, None if k_r is None else k_r[:, a:b],
                       None if s_r is None else s_r[:, a:b], car)
        parts.append(run_policy(iota, config, car.part))
    return _assemble_plan(parts, B, H, dev)


def _assemble_plan(parts: list[RowPlan], B: int, H: int, dev: torch.device) -> Plan:
    def cat(f: str) -> torch.Tensor:
        x = torch.from_numpy(np.concatenate([getattr(p, f) for p in parts], 1)).to(dev)
        return from_rows(x, B, H)

    return Plan(boundary=cat("boundary"), count=cat("count"), starts=cat("starts"),
                labels=cat("labels"))


# ----------------------------------------------------------------- execution
def forward(
    q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, beta: Any = None,
    scores: Any = None, plan: Plan | None = None, initial_cache: Cache | None = None,
    output_final_cache: bool = False, cu_seqlens: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, Cache | None]:
    """DLA-5, DLA-11.1: the output ``o [B, T, H, V]`` (q's dtype) and optionally the final cache.

    ``plan`` injects a plan (DLA-6.2). ``chunk_size`` (beyond the protocol) is
    the chunk length ``L`` of the chunked executor. Gates (``g``, ``lam``,
    ``beta``) given in another supported dtype are computed in q's dtype (DLA-1.3).
    """
    call = val.check_forward_call(q, k, v, g, lam, config, kind="torch", beta=beta,
                                  scores=scores, plan=plan, initial_cache=initial_cache,
                                  output_final_cache=output_final_cache,
                                  cu_seqlens=cu_seqlens, claims=_ACCEPTS)
    dt = q.dtype
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: must be an int >= 1, got {chunk_size!r} (DLA-11.1)")
    B, H, C = call.B, call.H, call.C
    K, V = int(q.shape[3]), int(v.shape[3])
    scale = config.resolved_scale(K)
    named = (("q", q), ("k", k), ("v", v), ("g", g), ("lam", lam))
    # one contiguous copy per input here; a strided row view (e.g. B = 1) would be copied
    # again by every matmul, index_select and flatten of the executor that reads it
    rows: dict[str, torch.Tensor | None] = {
        n: to_rows(x.to(dt)).contiguous() for n, x in named}
    rows["beta"] = None if beta is None else to_rows(beta.to(dt)).contiguous()
    s_r = None if scores is None else to_rows(scores)
    plan_r = None if plan is None else {
        f: to_rows(torch.as_tensor(getattr(plan, f)).to(device=q.device, dtype=torch.int64))
        for f in ("boundary", "count", "starts", "labels")}
    outs, finals = [], []
    for i, (a, b) in enumerate(call.segments):
        n = call.cache_rows(i)
        car = _carried(initial_cache, n, H, C)
        sl = {name: None if x is None else x[:, a:b] for name, x in rows.items()}
        pl = None if plan_r is None else {f: x[:, a:b] for f, x in plan_r.items()}
        o_seg, fin = _forward_segment(config, sl, None if s_r is None else s_r[:, a:b], pl,
                                      car, scale, chunk_size, output_final_cache, H, V)
        outs.append(o_seg)
        finals.append(fin)
    o = from_rows(torch.cat(outs, 1), B, H)
    if not output_final_cache:
        return o, None
    return o, Cache(**{f: torch.cat([getattr(c, f) for c in finals], 0)
                       for f in ("states", "info", "starts", "labels", "count", "prev_key",
                                 "position")})


def _forward_segment(config, sl, s_rows, plan_rows, car: _Carried, scale, chunk_size,
                     output_final_cache, H, V):
    """One sequence (or the whole batch without ``cu_seqlens``): plan, execute, final cache."""
    R, T, K = sl["q"].shape
    C = config.capacity
    dt, dev = sl["q"].dtype, sl["q"].device
    iota = None  # scores (a float64 host copy of k) only when a plan or the cache needs them
    if plan_rows is None:
        iota = _scores(config, sl["k"], s_rows, car)
        rp = run_policy(iota, config, car.part)
        st, lb, cnt = (torch.from_numpy(x).to(dev) for x in (rp.starts, rp.labels, rp.count))
        exact_info = rp.final_info
    else:  # validated by check_forward_call (DLA-6.4, DLA-9.10, DLA-9.11)
        st, lb, cnt = plan_rows["starts"], plan_rows["labels"], plan_rows["count"]
        exact_info = None
    S0 = (torch.zeros(R, C, K, V, dtype=dt, device=dev) if car.states is None
          else car.states.to(device=dev, dtype=dt))
    if T == 0:
        o, S = torch.zeros(R, 0, V, dtype=dt, device=dev), S0
    else:
        o, S = execute_chunked(
            sl["q"], sl["k"], sl["v"], sl["g"], sl["lam"], sl["beta"], st, lb, cnt,
            torch.from_numpy(car.part.position).to(dev), S0,
            torch.from_numpy(car.part.starts).to(dev), torch.from_numpy(car.part.count).to(dev),
            config.base, scale, chunk_size)
    if not output_final_cache:
        return o, None
    if iota is None:
        iota = _scores(config, sl["k"], s_rows, car)
    return o, _final_cache(car, st, lb, cnt, S, iota, exact_info, sl["k"], H, C, K)


def _final_info(car: _Carried, starts_last: np.ndarray, count_last: np.ndarray,
                iota: np.ndarray) -> np.ndarray:
    """DLA-3.2: information of the final states, from the carried states and the new tokens."""
    R, T = iota.shape
    C = starts_last.shape[1]
    st = np.where(np.arange(C) < count_last[:, None], starts_last, np.iinfo(np.int64).max)
    used0 = np.arange(C) < car.part.count[:, None]
    slot0 = (st[:, None, :] <= car.part.starts[:, :, None]).sum(-1) - 1  # [R, C_old]
    pos = car.part.position[:, None] + np.arange(T)
    slot_t = (st[:, None, :] <= pos[:, :, None]).sum(-1) - 1  # [R, T]
    info = np.zeros((R, C))
    rows = np.repeat(np.arange(R), C)
    np.add.at(info, (rows[used0.ravel()], slot0.ravel()[used0.ravel()]),
              car.part.info.ravel()[used0.ravel()])
    np.add.at(info, (np.repeat(np.arange(R), T), slot_t.ravel()), iota.ravel())
    return info


def _final_cache(car: _Carried, st, lb, cnt, S, iota, exact_info, k_rows, H, C, K) -> Cache:
    """DLA-7.1: the cache after the last token of a group of rows."""
    R, T = iota.shape
    N = R // H
    dev = S.device
    if T:
        starts, labels, count = st[:, -1], lb[:, -1], cnt[:, -1]
        prev_key = k_rows[:, -1]
        info = exact_info if exact_info is not None else _final_info(
            car, _npint(starts), _npint(count), iota)
    else:
        starts = torch.from_numpy(car.part.starts)
        count = torch.from_numpy(car.part.count)
        labels = torch.from_numpy(car.labels)
        prev_key = car.prev_key_t.to(device=dev, dtype=k_rows.dtype) \
            if car.prev_key_t is not None else torch.zeros(R, K, dtype=k_rows.dtype, device=dev)
        info = car.part.info
    return Cache(
        states=S.reshape(N, H, C, *S.shape[2:]),
        info=torch.from_numpy(np.ascontiguousarray(info, np.float64)).to(dev).reshape(N, H, C),
        starts=torch.as_tensor(starts, dtype=torch.int64, device=dev).reshape(N, H, C),
        labels=torch.as_tensor(labels, dtype=torch.int64, device=dev).reshape(N, H, C),
        count=torch.as_tensor(count, dtype=torch.int64, device=dev).reshape(N, H),
        prev_key=prev_key.to(dev).reshape(N, H, K),
        position=torch.from_numpy(car.part.position.reshape(N, H)[:, 0] + T).to(dev),
    )
