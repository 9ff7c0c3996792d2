"""Public entry points of the reference: ``make_plan`` and ``forward`` (spec DLA-11.1).

Arguments use the ``[B, T, H, ...]`` layout (DLA-1.1); internally every
(sequence, head) pair is one independent *row*. ``cu_seqlens`` (DLA-8) and a
carried ``initial_cache`` (DLA-7) are handled here, once, for every executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dla.cache import CACHE_FIELDS, Cache
from dla.config import Config
from dla.plan import Plan
from dla.reference import validation as val
from dla.reference.masked import execute_masked_rows
from dla.reference.policies import PartitionState, RowPlan, run_policy
from dla.reference.recurrent import execute_rows
from dla.reference.scores import token_scores


@dataclass(frozen=True)
class Margins:
    """DLA-6.3: how far each decision is from flipping, ``[B, T, H]`` float64.

    ``boundary`` is ``|iota_t - tau|`` (inf where the boundary is forced);
    ``merge`` is the second-smallest minus the smallest merge cost (0 for an
    exact tie, inf where no merge happened).
    """

    boundary: np.ndarray
    merge: np.ndarray

    def minimum(self) -> float:
        """The smallest finite margin (inf if every decision is forced)."""
        m = np.concatenate([self.boundary.ravel(), self.merge.ravel()])
        return float(m.min()) if m.size else float("inf")


# ----------------------------------------------------------------- layout helpers
def to_rows(x: np.ndarray) -> np.ndarray:
    """``[B, T, H, ...] -> [B * H, T, ...]`` as float64 (or as is for integers)."""
    x = np.asarray(x)
    B, T, H = x.shape[:3]
    return np.moveaxis(x, 2, 1).reshape(B * H, T, *x.shape[3:])


def from_rows(x: np.ndarray, B: int, H: int) -> np.ndarray:
    """``[B * H, T, ...] -> [B, T, H, ...]``."""
    return np.moveaxis(x.reshape(B, H, *x.shape[1:]), 1, 2)


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _initial_partition(cache: Cache | None, n: slice, H: int, C: int) -> PartitionState:
    """The partition part of the cache rows ``n`` (DLA-7.1), or a fresh one."""
    if cache is None:
        N = n.stop - n.start
        return PartitionState.fresh(N * H, C)
    return PartitionState(
        count=np.asarray(cache.count[n], np.int64).reshape(-1),
        starts=np.asarray(cache.starts[n], np.int64).reshape(-1, C),
        labels=np.asarray(cache.labels[n], np.int64).reshape(-1, C),
        info=np.asarray(cache.info[n], np.float64).reshape(-1, C),
        position=np.repeat(np.asarray(cache.position[n], np.int64), H),
    )


def _prev_key(cache: Cache | None, n: slice) -> np.ndarray | None:
    if cache is None:
        return None
    pk = np.asarray(cache.prev_key[n], np.float64)
    return pk.reshape(-1, pk.shape[-1])


# ----------------------------------------------------------------- planning
def _plan_segment(
    config, k_rows, s_rows, part, prev_key
) -> tuple[RowPlan, PartitionState, np.ndarray]:
    # DLA-2.3: a cache that has consumed no token (position 0) is a fresh sequence.
    iota = token_scores(config.score, k_rows, s_rows, prev_key, carried=part.position > 0)
    rp, final = run_policy(iota, config, part)
    return rp, final, iota


def plan_with_margins(
    config: Config, *, k: Any = None, scores: Any = None, initial_cache: Cache | None = None,
    cu_seqlens: Any = None,
) -> tuple[Plan, Margins]:
    """DLA-6.1, DLA-6.3: the plan and the margin of every decision."""
    call = val.check_plan_call(config, kind="numpy", k=k, scores=scores,
                               initial_cache=initial_cache, cu_seqlens=cu_seqlens)
    B, H, C = call.B, call.H, call.C
    if initial_cache is not None:
        initial_cache = initial_cache.to_numpy()
    k_r = None if k is None else to_rows(_f64(k))
    s_r = None if scores is None else to_rows(_f64(scores))
    parts = []
    for i, (a, b) in enumerate(call.segments):
        n = call.cache_rows(i)
        part = _initial_partition(initial_cache, n, H, C)
        rp, _, _ = _plan_segment(
            config, None if k_r is None else k_r[:, a:b], None if s_r is None else s_r[:, a:b],
            part, _prev_key(initial_cache, n),
        )
        parts.append(rp)
    return _assemble_plan(parts, B, H), _assemble_margins(parts, B, H)


def make_plan(config: Config, *, k: Any = None, scores: Any = None,
              initial_cache: Cache | None = None, cu_seqlens: Any = None) -> Plan:
    """DLA-6.1, DLA-11.1: every discrete decision for the given scores."""
    return plan_with_margins(config, k=k, scores=scores, initial_cache=initial_cache,
                             cu_seqlens=cu_seqlens)[0]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=1)


def _assemble_plan(parts: list[RowPlan], B: int, H: int) -> Plan:
    return Plan(
        boundary=from_rows(_cat([p.boundary for p in parts]), B, H),
        count=from_rows(_cat([p.count for p in parts]), B, H),
        starts=from_rows(_cat([p.starts for p in parts]), B, H),
        labels=from_rows(_cat([p.labels for p in parts]), B, H),
    )


def _assemble_margins(parts: list[RowPlan], B: int, H: int) -> Margins:
    return Margins(
        boundary=from_rows(_cat([p.boundary_margin for p in parts]), B, H),
        merge=from_rows(_cat([p.merge_margin for p in parts]), B, H),
    )


# ----------------------------------------------------------------- execution
def forward(
    q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, beta: Any = None,
    scores: Any = None, plan: Plan | None = None, initial_cache: Cache | None = None,
    output_final_cache: bool = False, cu_seqlens: Any = None, masked: bool = False,
) -> tuple[np.ndarray, Cache | None]:
    """DLA-5, DLA-11.1: the DLA output ``o [B, T, H, V]`` (float64) and optionally the final cache.

    ``plan`` injects a plan (DLA-6.2) instead of computing one from the
    scores. ``masked=True`` evaluates the masked form (DLA-5.4, DLA-11.5; ``gla`` base,
    no carried cache) instead of the recurrent one.
    """
    call = val.check_forward_call(q, k, v, g, lam, config, kind="numpy", beta=beta,
                                  scores=scores, plan=plan, initial_cache=initial_cache,
                                  cu_seqlens=cu_seqlens)
    B, T, H, C = call.B, call.T, call.H, call.C
    K, V = int(q.shape[3]), int(v.shape[3])
    if initial_cache is not None:
        initial_cache = initial_cache.to_numpy()
    if plan is not None:
        plan = plan.to_numpy()
    if masked and (config.base != "gla" or initial_cache is not None or output_final_cache):
        raise ValueError(
            "masked: the masked form covers base='gla' without initial_cache and without "
            "output_final_cache (DLA-5.4, DLA-11.5)"
        )
    scale = config.resolved_scale(K)
    rows = {n: to_rows(_f64(x)) for n, x in
            (("q", q), ("k", k), ("v", v), ("g", g), ("lam", lam)) }
    beta_r = None if beta is None else to_rows(_f64(beta))
    scores_r = None if scores is None else to_rows(_f64(scores))
    # Injected int32 fields are widened: the executor's sentinels are int64 (DLA-1.3).
    plan_r = None if plan is None else {
        f: to_rows(np.asarray(getattr(plan, f), bool if f == "boundary" else np.int64))
        for f in ("boundary", "count", "starts", "labels")
    }
    o = np.zeros((B * H, T, V))
    finals = []
    for i, (a, b) in enumerate(call.segments):
        n = call.cache_rows(i)
        part = _initial_partition(initial_cache, n, H, C)
        pk = _prev_key(initial_cache, n)
        s_seg = None if scores_r is None else scores_r[:, a:b]
        if plan_r is None:
            rp, _, iota = _plan_segment(config, rows["k"][:, a:b], s_seg, part, pk)
        else:  # DLA-6.2: the injected plan replaces the policy; the scores still give the info
            iota = token_scores(config.score, rows["k"][:, a:b], s_seg, pk,
                                carried=part.position > 0)
            no_margin = np.full(iota.shape, np.inf)
            rp = RowPlan(**{f: x[:, a:b] for f, x in plan_r.items()},
                         boundary_margin=no_margin, merge_margin=no_margin)
        sl = {n_: x[:, a:b] for n_, x in rows.items()}
        if masked:
            o[:, a:b] = execute_masked_rows(sl["q"], sl["k"], sl["v"], sl["g"], sl["lam"],
                                            rp.starts, rp.labels, rp.count, scale)
            continue
        S0 = (np.zeros((part.count.shape[0], C, K, V)) if initial_cache is None
              else np.asarray(initial_cache.states[n], np.float64).reshape(-1, C, K, V))
        o[:, a:b], S, info = execute_rows(
            sl["q"], sl["k"], sl["v"], sl["g"], sl["lam"],
            None if beta_r is None else beta_r[:, a:b], iota,
            rp.starts, rp.labels, rp.count, config.base, scale,
            S0, part.info, part.starts, part.count,
        )
        if output_final_cache:
            finals.append(_final_cache(rp, part, S, info, sl["k"], pk, H, C, K))
    out = from_rows(o, B, H)
    if not output_final_cache:
        return out, None
    return out, Cache(**{f: np.concatenate([getattr(c, f) for c in finals], axis=0)
                         for f in CACHE_FIELDS})


def _final_cache(rp: RowPlan, part: PartitionState, S: np.ndarray, info: np.ndarray,
                 k_rows: np.ndarray, prev_key: np.ndarray | None, H: int, C: int, K: int) -> Cache:
    """DLA-7.1: the cache after the last token of a segment of rows."""
    R, T = rp.count.shape
    if T:
        count, starts, labels = rp.count[:, -1], rp.starts[:, -1], rp.labels[:, -1]
        last_key = k_rows[:, -1]
    else:
        count, starts, labels = part.count, part.starts, part.labels
        last_key = prev_key if prev_key is not None else np.zeros((R, K))
    N = R // H
    return Cache(
        states=S.reshape(N, H, C, *S.shape[2:]),
        info=info.reshape(N, H, C),
        starts=starts.reshape(N, H, C).astype(np.int64),
        labels=labels.reshape(N, H, C).astype(np.int64),
        count=count.reshape(N, H).astype(np.int64),
        prev_key=last_key.reshape(N, H, K),
        position=(part.position.reshape(N, H)[:, 0] + T).astype(np.int64),
    )


def empty_cache(N: int, H: int, C: int, K: int, V: int) -> Cache:
    """DLA-7.1: the cache of ``N`` fresh sequences (equivalent to passing none)."""
    return Cache(
        states=np.zeros((N, H, C, K, V)), info=np.zeros((N, H, C)),
        starts=np.full((N, H, C), -1, np.int64), labels=np.full((N, H, C), -1, np.int64),
        count=np.zeros((N, H), np.int64), prev_key=np.zeros((N, H, K)),
        position=np.zeros(N, np.int64),
    )
