"""Deliberately broken implementations: the proof that the suite catches wrong code.

Each entry of :data:`BROKEN` is the float64 reference with exactly one rule
changed, and the set of spec clauses at least one of which certification
must report as failed. A variant is built either by transforming the inputs
or outputs of :mod:`dla.reference` (the bug lives at the interface), or by
replacing one function of a reference module while the variant runs (the bug
lives inside a policy or the executor); only where a rule cannot be injected
is a few-line piece re-implemented here. Each variant claims the levels where
its bug is observable, so certification exercises it.

``python -m dla.conformance.broken`` certifies every variant (profile ``ci``)
and prints ``name | expected clauses | failed clauses | caught?``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from types import ModuleType
from typing import Any

import numpy as np

from dla import reference
from dla.cache import CACHE_FIELDS, Cache
from dla.config import BASES, POLICIES, Config
from dla.plan import Plan
from dla.reference import api as reference_api
from dla.reference import masked, policies, recurrent, scores
from dla.reference import validation as val

#: A patch: (module, attribute, factory building the replacement from the original).
Patch = tuple[ModuleType, str, Callable[[Any], Any]]


@contextmanager
def _patched(patches: tuple[Patch, ...]) -> Iterator[None]:
    """Replace module attributes for the duration of one call, then restore them."""
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    try:
        for (mod, name, make), (_, _, orig) in zip(patches, saved, strict=True):
            setattr(mod, name, make(orig))
        yield
    finally:
        for mod, name, orig in saved:
            setattr(mod, name, orig)


class Broken:
    """An implementation (DLA-11.1) that is the reference with one planted bug.

    ``forward`` / ``make_plan`` default to the reference's; ``patches`` are
    applied while either runs. ``CLAIMS`` name the levels that reveal the bug.
    """

    def __init__(self, name: str, levels: tuple[str, ...], *, patches: tuple[Patch, ...] = (),
                 forward: Callable[..., Any] | None = None,
                 make_plan: Callable[..., Any] | None = None,
                 bases: tuple[str, ...] = BASES, policies: tuple[str, ...] = POLICIES) -> None:
        self.NAME = name
        self.CLAIMS = {"levels": levels, "dtypes": ("float64",), "devices": ("cpu",),
                       "array": "numpy", "bases": bases, "policies": policies}
        self._patches = patches
        self._forward = forward or reference.forward
        self._make_plan = make_plan or reference.make_plan

    def __repr__(self) -> str:
        return f"<broken implementation {self.NAME}>"

    def forward(self, *args: Any, **kw: Any) -> tuple[Any, Cache | None]:
        with _patched(self._patches):
            return self._forward(*args, **kw)

    def make_plan(self, *args: Any, **kw: Any) -> Plan:
        with _patched(self._patches):
            return self._make_plan(*args, **kw)


# ----------------------------------------------------------------- bugs at the interface
def _forward_future_query(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                          **kw: Any) -> Any:
    """Off-by-one causality: ``o_t`` reads out with ``q_{t+1}`` (the last token keeps its own)."""
    q_next = np.concatenate([q[:, 1:], q[:, -1:]], axis=1)[:, : q.shape[1]]
    return reference.forward(q_next, k, v, g, lam, config, **kw)


def _forward_one_wrong_position(*args: Any, **kw: Any) -> Any:
    """One output entry, at ``(b, t, h) = (0, T // 2, H - 1)``, is off by 0.1 % (plus 1e-3)."""
    o, cache = reference.forward(*args, **kw)
    if o.size:
        _, T, H, _ = o.shape
        o[0, T // 2, H - 1, 0] += 1e-3 * (1.0 + abs(o[0, T // 2, H - 1, 0]))
    return o, cache


def _forward_default_scale(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                           **kw: Any) -> Any:
    """Wrong default scale: ``1 / K`` instead of ``K ** -0.5`` when ``config.scale`` is None."""
    if config.scale is None:
        config = dataclasses.replace(config, scale=1.0 / q.shape[-1])
    return reference.forward(q, k, v, g, lam, config, **kw)


def _drop_cache(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The call with ``initial_cache`` ignored (every piece starts fresh)."""
    def call(*args: Any, initial_cache: Cache | None = None, **kw: Any) -> Any:
        return fn(*args, **kw)

    return call


def _cache_row(cache: Cache | None, n: int) -> Cache | None:
    return None if cache is None else Cache(**{f: getattr(cache, f)[n : n + 1]
                                               for f in CACHE_FIELDS})


def _forward_varlen_leak(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *,
                         cu_seqlens: Any = None, initial_cache: Cache | None = None,
                         output_final_cache: bool = False, plan: Plan | None = None,
                         **kw: Any) -> Any:
    """Varlen leak: each packed sequence continues the previous one's cache, not a fresh one."""
    if cu_seqlens is None:
        return reference.forward(q, k, v, g, lam, config, initial_cache=initial_cache, plan=plan,
                                 output_final_cache=output_final_cache, **kw)
    cu = val.check_cu_seqlens(cu_seqlens, q.shape[0], q.shape[1])
    if initial_cache is not None:
        val.check_cache(initial_cache, len(cu) - 1, q.shape[2], config.capacity, q.shape[3],
                        v.shape[3])
    cache, outs, finals = _cache_row(initial_cache, 0), [], []
    for a, b in pairwise(int(c) for c in cu):
        def cut(x: Any, a: int = a, b: int = b) -> Any:
            return None if x is None else x[:, a:b]

        piece_plan = None if plan is None else Plan(**{f.name: cut(getattr(plan, f.name))
                                                     for f in dataclasses.fields(Plan)})
        o, cache = reference.forward(cut(q), cut(k), cut(v), cut(g), cut(lam), config,
                                     **{n: cut(x) for n, x in kw.items()}, plan=piece_plan,
                                     initial_cache=cache, output_final_cache=True)
        outs.append(o)
        finals.append(cache)
    final = Cache(**{f: np.concatenate([getattr(c, f) for c in finals]) for f in CACHE_FIELDS})
    return np.concatenate(outs, axis=1), final if output_final_cache else None


def _make_plan_varlen_leak(config: Config, *, cu_seqlens: Any = None,
                           initial_cache: Cache | None = None, **kw: Any) -> Plan:
    """Varlen leak: the packed sequences are planned as one long sequence."""
    if cu_seqlens is None:
        return reference.make_plan(config, initial_cache=initial_cache, **kw)
    src = kw["scores"] if kw.get("scores") is not None else kw["k"]
    val.check_cu_seqlens(cu_seqlens, src.shape[0], src.shape[1])
    return reference.make_plan(config, initial_cache=_cache_row(initial_cache, 0), **kw)


# ----------------------------------------------------------------- bugs inside the policies
def _at_or_above(orig: Callable[..., Any]) -> Callable[..., Any]:
    """``iota >= tau`` opens a state (``>`` the next float below ``tau`` is exactly that)."""
    return lambda st, iota_t, tau: orig(st, iota_t, np.nextafter(tau, -np.inf))


def _labels_from_oldest(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Labels counted from the oldest state (0 = oldest) instead of the newest."""
    def labels(count: np.ndarray, C: int) -> np.ndarray:
        j = np.arange(C)
        return np.where(j < count[..., None], j, -1)

    return labels


def _merge(newest_wins_ties: bool = False, forget_newer_info: bool = False) -> Callable[..., Any]:
    """DLA-3.4 merge with one rule changed; otherwise ``policies._merge_cheapest_pair``."""
    def make(orig: Callable[..., Any]) -> Callable[..., Any]:
        def merge(st: policies.PartitionState, C: int) -> np.ndarray:
            margin = np.full(st.count.shape[0], np.inf)
            for r in np.flatnonzero(st.count > C):
                cost = st.info[r, :-1] + st.info[r, 1:]
                m = int(np.flatnonzero(cost == cost.min())[-1 if newest_wins_ties else 0])
                st.info[r, m] += 0.0 if forget_newer_info else st.info[r, m + 1]
                st.info[r, m + 1 :] = np.append(st.info[r, m + 2 :], 0.0)
                st.starts[r, m + 1 :] = np.append(st.starts[r, m + 2 :], -1)
                st.count[r] -= 1
            return margin

        return merge

    return make


def _first_score_one(orig: Callable[..., Any]) -> Callable[..., Any]:
    """``iota_0 = 1`` instead of 0 for the first token of a fresh sequence (DLA-2.3)."""
    def key_cosine(k: np.ndarray, prev_key: np.ndarray | None, *rest: Any) -> np.ndarray:
        iota = orig(k, prev_key, *rest)
        if prev_key is None and iota.shape[1]:
            iota[:, 0] = 1.0
        return iota

    return key_cosine


def _fenwick_level_minus_one(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Fenwick levels off by one: ``bit_length(t XOR s) - 1`` (levels 0 and 1 fall together)."""
    return lambda t, s: np.maximum(orig(t, s) - 1, 0)


# ----------------------------------------------------------------- bugs inside the executor
def _oldest_not_decayed(orig: Callable[..., Any]) -> Callable[..., Any]:
    """The oldest state (slot 0) skips the transition of DLA-5.1 / DLA-5.2."""
    def transition(S: np.ndarray, *args: Any) -> np.ndarray:
        out = orig(S, *args)
        out[:, 0] = S[:, 0]
        return out

    return transition


def _write_without_beta(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Delta base writes ``k v^T`` instead of ``beta k v^T`` (DLA-5.2)."""
    return lambda k_t, v_t, beta_t, base: orig(k_t, v_t, None, "gla")


# ----------------------------------------------------------------- single-policy kernels
def _no_validation(orig: Callable[..., Any]) -> Callable[..., Any]:
    """A forward call "validated" by reading its sizes only: no rule of DLA-9 is checked."""
    def sizes_only(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *,
                   cu_seqlens: Any = None, **kw: Any) -> val.Call:
        B, T, H, K = (int(x) for x in np.shape(q))
        cu = None if cu_seqlens is None else [int(c) for c in np.asarray(cu_seqlens)]
        segments = ((0, T),) if cu is None else tuple(pairwise(cu))
        return val.Call(B, T, H, K, int(np.shape(v)[-1]), config.capacity, segments,
                        cu is not None)

    return sizes_only


def _no_plan_validation(orig: Callable[..., Any]) -> Callable[..., Any]:
    def sizes_only(config: Config, *, k: Any = None, scores: Any = None, cu_seqlens: Any = None,
                   **kw: Any) -> val.Call:
        src = scores if config.score == "external" else k
        B, T, H = (int(x) for x in np.shape(src)[:3])
        cu = None if cu_seqlens is None else [int(c) for c in np.asarray(cu_seqlens)]
        segments = ((0, T),) if cu is None else tuple(pairwise(cu))
        K = None if k is None else int(np.shape(k)[-1])
        return val.Call(B, T, H, K, None, config.capacity, segments, cu is not None)

    return sizes_only


def _forward_ignores_plan(*args: Any, plan: Plan | None = None, **kw: Any) -> Any:
    """An injected plan is dropped: the kernel always executes its own (fenwick) partition."""
    return reference.forward(*args, **kw)


def _forward_crashes_on_empty(q: Any, *args: Any, **kw: Any) -> Any:
    """``T = 0`` crashes the kernel (as ``int(log2(0))`` does in a level count)."""
    if np.shape(q)[1] == 0:
        raise OverflowError("cannot convert float infinity to integer")
    return reference.forward(q, *args, **kw)


def _forward_ignores_scale(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                           **kw: Any) -> Any:
    """``config.scale`` is ignored: the readout always uses ``K ** -0.5``."""
    return reference.forward(q, k, v, g, lam, dataclasses.replace(config, scale=None), **kw)


# ----------------------------------------------------------------- read out before merging
_ORIGINAL_MERGE = policies._merge_cheapest_pair


def _deferred_merge(C: int) -> tuple[Patch, Patch]:
    """Patches that postpone the merge of step ``t`` to the start of step ``t + 1``.

    Run under capacity ``C + 1`` (so ``C + 1`` states fit a readout), the
    readout of step ``t`` then sees the ``C + 1`` states before the merge.
    """
    def merge_later(orig: Callable[..., Any]) -> Callable[..., Any]:
        return lambda st, C1: np.full(st.count.shape[0], np.inf)

    def merge_first(orig: Callable[..., Any]) -> Callable[..., Any]:
        merge = _ORIGINAL_MERGE

        def open_and_write(st: policies.PartitionState, iota_t: np.ndarray, tau: float) -> Any:
            view = policies.PartitionState(st.count, st.starts[:, : C + 1], st.labels,
                                           st.info[:, : C + 1], st.position)
            merge(view, C)
            return orig(st, iota_t, tau)

        return open_and_write

    return ((policies, "_merge_cheapest_pair", merge_later),
            (policies, "_open_and_write", merge_first))


def _one_more(config: Config) -> Config:
    return dataclasses.replace(config, capacity=config.capacity + 1)


def _forward_read_before_merge(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                               **kw: Any) -> Any:
    """Readout before merging: up to ``C + 1`` states are read (the extra one with ``lam[C-1]``)."""
    lam1 = np.concatenate([lam, lam[..., -1:]], axis=-1)
    with _patched(_deferred_merge(config.capacity)):
        return reference.forward(q, k, v, g, lam1, _one_more(config), **kw)


def _make_plan_read_before_merge(config: Config, **kw: Any) -> Plan:
    with _patched(_deferred_merge(config.capacity)):
        return reference.make_plan(_one_more(config), **kw)


# ----------------------------------------------------------------- bugs in the regimes (DLA-12.11)
def _boundary_epsilon(orig: Callable[..., Any]) -> Callable[..., Any]:
    """``iota > tau + 1e-9``: a boundary rule off by a tiny epsilon (DLA-3.1, DLA-3.8)."""
    return lambda st, iota_t, tau: orig(st, iota_t, tau + 1e-9)


def _boundary_in_float32(orig: Callable[..., Any]) -> Callable[..., Any]:
    """The boundary test made after rounding score and ``tau`` to float32 (DLA-3.8)."""
    def open_and_write(st: policies.PartitionState, iota_t: np.ndarray, tau: float) -> Any:
        rows = np.arange(st.count.shape[0])
        forced = st.count == 0
        boundary = forced | (iota_t.astype(np.float32) > np.float32(tau))
        ob = rows[boundary]
        st.starts[ob, st.count[ob]] = st.position[ob]
        st.info[ob, st.count[ob]] = 0.0
        st.count[ob] += 1
        st.info[rows, st.count - 1] += iota_t
        return boundary, np.where(forced, np.inf, np.abs(iota_t - tau))

    return open_and_write


def _normalise_then_dot(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Cosine as ``(a / |a|) . (b / |b|)``, as ``F.cosine_similarity`` computes it: a repeated
    key scores a few ulps above 0 (DLA-2.6)."""
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
        ok = (na > 0) & (nb > 0)
        ua = a / np.where(na > 0, na, 1.0)[..., None]
        ub = b / np.where(nb > 0, nb, 1.0)[..., None]
        return np.clip(np.where(ok, np.sum(ua * ub, axis=-1), 0.0), -1.0, 1.0)

    return cosine


def _no_rescaling(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Keys used unscaled: squares of tiny entries underflow to a "zero key", of huge ones
    overflow (DLA-2.2, DLA-2.6)."""
    return lambda x: x


def _prefix_sum_information(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Information as differences of prefix sums, not the running sums of DLA-3.2."""
    from dla.conformance.regime_cases import plan_with_prefix_sums

    def plan_dla(iota: np.ndarray, config: Config, init: policies.PartitionState) -> Any:
        rp, final = orig(iota, config, init)
        if np.any(init.count > 0):
            return rp, final
        rp.starts = plan_with_prefix_sums(iota, config)
        rp.count = (rp.starts >= 0).sum(axis=-1)
        rp.labels = policies.dla_labels(rp.count, config.capacity)
        return rp, final

    return plan_dla


def _forward_drops_last_v_tile(*args: Any, **kw: Any) -> Any:
    """``V`` walked in tiles of 64 with ``range(V // 64)``: a partial last tile is never written."""
    o, cache = reference.forward(*args, **kw)
    V = o.shape[-1]
    if V > 64 and V % 64:
        o[..., (V // 64) * 64 :] = 0.0
    return o, cache


def _forward_scale_from_v(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                          **kw: Any) -> Any:
    """The default scale taken from the value width: ``V ** -0.5`` (same as ``K ** -0.5`` when
    ``K = V``)."""
    if config.scale is None:
        config = dataclasses.replace(config, scale=float(np.shape(v)[-1]) ** -0.5)
    return reference.forward(q, k, v, g, lam, config, **kw)


def _rows_wrap_at_32(plan: Plan) -> Plan:
    def wrap(x: np.ndarray) -> np.ndarray:
        B, T, H = x.shape[:3]
        rows = np.moveaxis(x, 2, 1).reshape(B * H, T, *x.shape[3:]).copy()
        if rows.shape[0] > 32:
            rows[32:] = rows[: rows.shape[0] - 32]
        return np.moveaxis(rows.reshape(B, H, T, *x.shape[3:]), 1, 2)

    return Plan(**{f.name: wrap(getattr(plan, f.name)) for f in dataclasses.fields(Plan)})


def _make_plan_rows_wrap(config: Config, **kw: Any) -> Plan:
    """A row-parallel planner whose row index wraps at 32: rows 32.. get the plans of rows 0.."""
    return _rows_wrap_at_32(reference.make_plan(config, **kw))


def _forward_rows_wrap(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *,
                       plan: Plan | None = None, **kw: Any) -> Any:
    if plan is None and kw.get("cu_seqlens") is None and kw.get("initial_cache") is None:
        plan = _make_plan_rows_wrap(config, k=k, scores=kw.get("scores"))
    return reference.forward(q, k, v, g, lam, config, plan=plan, **kw)


def _decay_as_product(orig: Callable[..., Any]) -> Callable[..., Any]:
    """The masked form's decay as ``exp(G_t) * exp(-G_s)``: fine until the cumulative decay
    passes about 700, then ``inf * 0`` (DLA-5.1, DLA-5.6)."""
    def execute(q: Any, k: Any, v: Any, g: Any, lam: Any, starts: Any, labels: Any,
                count: Any, scale: float) -> np.ndarray:
        G = np.cumsum(g, axis=1)
        lab = masked.token_labels(starts, labels, count)
        causal = lab >= 0
        w = np.take_along_axis(lam, np.where(causal, lab, 0), axis=2)
        with np.errstate(over="ignore", invalid="ignore"):
            decay = np.exp(G)[:, :, None] * np.exp(-G)[:, None, :] * causal
            A = np.einsum("rtk,rsk->rts", q, k) * decay * np.where(causal, w, 0.0)
            return scale * np.einsum("rts,rsv->rtv", A, v)

    return execute


def _forward_masked_when_possible(*args: Any, **kw: Any) -> Any:
    config = args[5]
    if (config.base == "gla" and kw.get("initial_cache") is None
            and not kw.get("output_final_cache")):
        return reference.forward(*args, masked=True, **kw)
    return reference.forward(*args, **kw)


def _unit_keys(fn: Callable[..., Any]) -> Callable[..., Any]:
    def normalised(k_t: np.ndarray, *rest: Any) -> Any:
        n = np.linalg.norm(k_t, axis=-1, keepdims=True)
        return fn(k_t / np.where(n > 0, n, 1.0), *rest)

    return normalised


def _delta_normalises_keys_transition(orig: Callable[..., Any]) -> Callable[..., Any]:
    """The delta base normalises each key inside (keys are used as given, DLA-5.2)."""
    def transition(S: np.ndarray, g_t: np.ndarray, k_t: np.ndarray, beta_t: Any,
                   base: str) -> np.ndarray:
        return _unit_keys(lambda kk: orig(S, g_t, kk, beta_t, base))(k_t)

    return transition


def _delta_normalises_keys_write(orig: Callable[..., Any]) -> Callable[..., Any]:
    def write(k_t: np.ndarray, v_t: np.ndarray, beta_t: Any, base: str) -> np.ndarray:
        return _unit_keys(lambda kk: orig(kk, v_t, beta_t, base))(k_t)

    return write


def _g_finiteness_unchecked(orig: Callable[..., Any]) -> Callable[..., Any]:
    """Validation that checks ``g > 0`` but not NaN or ``-inf`` in ``g`` (DLA-9.4)."""
    def require_finite(name: str, x: Any) -> None:
        if name != "g":
            orig(name, x)

    return require_finite


class TorchBroken:
    """A torch implementation with one planted bug (for the gradients level, DLA-12.6)."""

    def __init__(self, name: str, forward: Callable[..., Any]) -> None:
        self.NAME = name
        self.CLAIMS = {"levels": ("gradients",), "dtypes": ("float64",), "devices": ("cpu",),
                       "array": "torch"}
        self._forward = forward

    def __repr__(self) -> str:
        return f"<broken implementation {self.NAME}>"

    def forward(self, *args: Any, **kw: Any) -> Any:
        return self._forward(*args, **kw)

    def make_plan(self, *args: Any, **kw: Any) -> Plan:
        from dla.impls import torch_cpu

        return torch_cpu.make_plan(*args, **kw)


def _forward_truncated_backprop(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *,
                                plan: Plan | None = None, **kw: Any) -> Any:
    """torch_cpu run chunk by chunk (64 tokens), the carried states detached between chunks:
    outputs are right, gradients through the inter-chunk state are lost (DLA-10.5)."""
    import torch

    from dla.impls import torch_cpu

    if plan is None:
        plan = torch_cpu.make_plan(config, k=k, scores=kw.get("scores"))
    T, outs, cache = q.shape[1], [], None
    for a in range(0, T, 64):
        def cut(x: Any, a: int = a) -> Any:
            return None if x is None else x[:, a : a + 64]

        piece_plan = Plan(**{f.name: cut(getattr(plan, f.name))
                             for f in dataclasses.fields(Plan)})
        o, cache = torch_cpu.forward(cut(q), cut(k), cut(v), cut(g), cut(lam), config,
                                     plan=piece_plan, initial_cache=cache,
                                     output_final_cache=True,
                                     **{n: cut(x) for n, x in kw.items()})
        cache = dataclasses.replace(cache, states=cache.states.detach())
        outs.append(o)
    return (torch.cat(outs, dim=1) if outs else q.new_zeros(*q.shape[:3], v.shape[3])), None


# ----------------------------------------------------------------- memory and state (DLA-12.10)
def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # NumPy < 2
        byte_bounds = np.byte_bounds  # type: ignore[attr-defined]  # noqa: NPY201
    lo, hi = byte_bounds(a)
    return int(lo), int(hi)


def _one_past_the_end(x: np.ndarray) -> np.ndarray | None:
    """``x[:, T]`` read through ``x``'s own strides, as a kernel's unmasked tail load does: the
    bytes after the last token, when ``x`` is a view of a larger buffer that holds them
    (``None`` for a fresh array, whose next bytes a real kernel would read as whatever lies
    there; zeros are the common case and change nothing)."""
    if x.base is None or x.ndim < 2:
        return None
    lo, hi = _byte_bounds(x.base)
    start = x.__array_interface__["data"][0]
    shape = (x.shape[0], x.shape[1] + 1, *x.shape[2:])
    last = start + sum((n - 1) * st for n, st in zip(shape, x.strides, strict=True) if st > 0)
    if start < lo or last + x.itemsize > hi:
        return None
    return np.lib.stride_tricks.as_strided(x, shape, x.strides)[:, -1]


def _forward_reads_past_the_tail(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                                 **kw: Any) -> Any:
    """The last token's decay also multiplies by ``exp(g[T])``, read one past the end (the
    ``T % 64 != 0`` tail of a chunked kernel): ``g`` beyond ``T`` is 0 in a fresh buffer."""
    o, cache = reference.forward(q, k, v, g, lam, config, **kw)
    past = _one_past_the_end(np.asarray(g))
    if past is not None and o.shape[1]:
        o[:, -1] *= np.exp(past)[..., None]
    return o, cache


def _contiguous_view(x: np.ndarray) -> np.ndarray:
    """``x``'s buffer read with contiguous strides, as a kernel given ``x.data_ptr()`` and the
    shape only does; a contiguous array reads as itself."""
    if x.flags.c_contiguous or x.base is None:
        return x
    lo, hi = _byte_bounds(x.base)
    start = x.__array_interface__["data"][0]
    if start < lo or start + x.nbytes > hi:
        return np.ascontiguousarray(x)
    strides = tuple(int(np.prod(x.shape[i + 1 :])) * x.itemsize for i in range(x.ndim))
    return np.lib.stride_tricks.as_strided(x, x.shape, strides)


def _forward_assumes_contiguous(q: Any, *args: Any, **kw: Any) -> Any:
    """``q`` read as if it were contiguous: a transposed or strided ``q`` gives wrong values."""
    return reference.forward(np.array(_contiguous_view(np.asarray(q))), *args, **kw)


def _forward_scales_q_in_place(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                               **kw: Any) -> Any:
    """``q *= scale`` in place, then the readout with scale 1: right outputs, and the caller's
    ``q`` modified (arguments are read-only, DLA-1.7)."""
    scale = config.resolved_scale(np.shape(q)[-1])
    if isinstance(q, np.ndarray) and q.flags.writeable and q.size:
        q *= scale
        return reference.forward(q, k, v, g, lam, dataclasses.replace(config, scale=1.0), **kw)
    return reference.forward(q, k, v, g, lam, config, **kw)


def _forward_decode_drops_information(q: Any, *args: Any, initial_cache: Cache | None = None,
                                      output_final_cache: bool = False, **kw: Any) -> Any:
    """A one-token decode step leaves the newest state's information as it was: the token's
    score is never added (DLA-3.2), so later merges diverge from one pass."""
    o, cache = reference.forward(q, *args, initial_cache=initial_cache,
                                 output_final_cache=output_final_cache or initial_cache
                                 is not None, **kw)
    if initial_cache is None or np.shape(q)[1] != 1 or cache is None:
        return o, cache if output_final_cache else None
    c0 = initial_cache.to_numpy()
    info = np.array(cache.info)
    same = cache.starts == np.asarray(c0.starts)  # the newest state did not change start
    newest = np.maximum(cache.count - 1, 0)
    rows = np.take_along_axis(same, newest[..., None], -1)[..., 0]
    old = np.take_along_axis(np.asarray(c0.info), newest[..., None], -1)[..., 0]
    np.put_along_axis(info, newest[..., None], np.where(rows, old, np.take_along_axis(
        info, newest[..., None], -1)[..., 0])[..., None], -1)
    cache = dataclasses.replace(cache, info=info)
    return o, cache if output_final_cache else None


# ----------------------------------------------------------------- the table
_PLAN, _NUM = ("plan", "end_to_end"), ("execute", "end_to_end")

BROKEN: dict[str, tuple[Any, set[str]]] = {
    "future_query": (
        Broken("future_query", _NUM, forward=_forward_future_query),
        {"DLA-5.3", "DLA-5.1", "DLA-5.2"}),
    "tie_break_newest_pair": (
        Broken("tie_break_newest_pair", _PLAN, policies=("dla",),
               patches=((policies, "_merge_cheapest_pair", _merge(newest_wins_ties=True)),)),
        {"DLA-3.4"}),
    "boundary_at_equality": (
        Broken("boundary_at_equality", _PLAN, policies=("dla",),
               patches=((policies, "_open_and_write", _at_or_above),)),
        {"DLA-3.1"}),
    "read_before_merge": (
        Broken("read_before_merge", _PLAN, policies=("dla",), forward=_forward_read_before_merge,
               make_plan=_make_plan_read_before_merge),
        {"DLA-3.6", "DLA-3.3"}),
    "oldest_state_not_decayed": (
        Broken("oldest_state_not_decayed", _NUM,
               patches=((recurrent, "transition", _oldest_not_decayed),)),
        {"DLA-5.1", "DLA-5.2", "DLA-5.5"}),
    "labels_from_oldest": (
        Broken("labels_from_oldest", _PLAN, policies=("dla",),
               patches=((policies, "dla_labels", _labels_from_oldest),)),
        {"DLA-3.5"}),
    "one_wrong_position": (
        Broken("one_wrong_position", _NUM, forward=_forward_one_wrong_position),
        {"DLA-5.1", "DLA-5.2", "DLA-1.1"}),
    "varlen_leak": (
        Broken("varlen_leak", ("varlen",), forward=_forward_varlen_leak,
               make_plan=_make_plan_varlen_leak),
        {"DLA-8.1"}),
    "ignores_initial_cache": (
        Broken("ignores_initial_cache", ("streaming",), forward=_drop_cache(reference.forward),
               make_plan=_drop_cache(reference.make_plan)),
        {"DLA-7.2"}),
    "first_score_one": (
        Broken("first_score_one", _PLAN, policies=("dla",),
               patches=((scores, "key_cosine", _first_score_one),)),
        {"DLA-2.3", "DLA-2.1", "DLA-3.3"}),
    "fenwick_level_off_by_one": (
        Broken("fenwick_level_off_by_one", _PLAN, policies=("fenwick",),
               patches=((policies, "fenwick_level", _fenwick_level_minus_one),)),
        {"DLA-4.1"}),
    "delta_write_without_beta": (
        Broken("delta_write_without_beta", _NUM, bases=("delta",),
               patches=((recurrent, "write", _write_without_beta),)),
        {"DLA-5.2", "DLA-5.5"}),
    "default_scale_inverse_k": (
        Broken("default_scale_inverse_k", _NUM, forward=_forward_default_scale),
        {"DLA-5.3", "DLA-5.1", "DLA-5.2", "DLA-5.5"}),
    "merge_forgets_information": (
        Broken("merge_forgets_information", _PLAN, policies=("dla",),
               patches=((policies, "_merge_cheapest_pair", _merge(forget_newer_info=True)),)),
        {"DLA-3.4", "DLA-3.2"}),
    # Kernels that support part of DLA (DLA-11.6): fenwick only, as Log-Linear Attention is.
    "fenwick_no_validation": (
        Broken("fenwick_no_validation", _NUM, policies=("fenwick",),
               patches=((val, "check_forward_call", _no_validation),
                        (val, "check_plan_call", _no_plan_validation))),
        {f"DLA-9.{i}" for i in range(1, 15)}),
    "fenwick_ignores_injected_plan": (
        Broken("fenwick_ignores_injected_plan", _NUM, policies=("fenwick",),
               forward=_forward_ignores_plan),
        {"DLA-6.2"}),
    "fenwick_crashes_on_empty_sequence": (
        Broken("fenwick_crashes_on_empty_sequence", _NUM, policies=("fenwick",),
               forward=_forward_crashes_on_empty),
        {"DLA-1.1"}),
    "fenwick_ignores_config_scale": (
        Broken("fenwick_ignores_config_scale", _NUM, policies=("fenwick",),
               forward=_forward_ignores_scale),
        {"DLA-5.3"}),
    # One bug per regime (DLA-12.11): each escapes the small tidy cases.
    "boundary_epsilon": (
        Broken("boundary_epsilon", _PLAN, policies=("dla",),
               patches=((policies, "_open_and_write", _boundary_epsilon),)),
        {"DLA-3.8", "DLA-3.1"}),
    "boundary_in_float32": (
        Broken("boundary_in_float32", _PLAN, policies=("dla",),
               patches=((policies, "_open_and_write", _boundary_in_float32),)),
        {"DLA-3.8", "DLA-3.1"}),
    "cosine_normalise_then_dot": (
        Broken("cosine_normalise_then_dot", _PLAN, policies=("dla",),
               patches=((scores, "cosine", _normalise_then_dot),)),
        {"DLA-2.6", "DLA-2.1"}),
    "cosine_without_rescaling": (
        Broken("cosine_without_rescaling", _PLAN, policies=("dla",),
               patches=((scores, "_power_of_two_normalized", _no_rescaling),)),
        {"DLA-2.6", "DLA-2.2"}),
    "information_by_prefix_sums": (
        Broken("information_by_prefix_sums", _PLAN, policies=("dla",),
               patches=((policies, "plan_dla", _prefix_sum_information),)),
        {"DLA-3.2", "DLA-3.9", "DLA-3.4"}),
    "last_v_tile_dropped": (
        Broken("last_v_tile_dropped", _NUM, forward=_forward_drops_last_v_tile),
        {"DLA-5.1", "DLA-5.2", "DLA-5.3"}),
    "scale_from_value_width": (
        Broken("scale_from_value_width", _NUM, forward=_forward_scale_from_v),
        {"DLA-5.1", "DLA-5.2", "DLA-5.3"}),
    "plan_rows_wrap_at_32": (
        Broken("plan_rows_wrap_at_32", _PLAN, policies=("dla",), forward=_forward_rows_wrap,
               make_plan=_make_plan_rows_wrap),
        {"DLA-1.1", "DLA-3.3", "DLA-3.1", "DLA-3.4"}),
    "decay_as_product_overflows": (
        Broken("decay_as_product_overflows", _NUM, bases=("gla",),
               forward=_forward_masked_when_possible,
               patches=((reference_api, "execute_masked_rows", _decay_as_product),)),
        {"DLA-5.1", "DLA-5.6"}),
    "delta_normalises_keys": (
        Broken("delta_normalises_keys", _NUM, bases=("delta",),
               patches=((recurrent, "transition", _delta_normalises_keys_transition),
                        (recurrent, "write", _delta_normalises_keys_write))),
        {"DLA-5.2"}),
    "g_finiteness_unchecked": (
        Broken("g_finiteness_unchecked", _NUM,
               patches=((val, "_require_finite", _g_finiteness_unchecked),)),
        {"DLA-9.4"}),
    "gradients_stop_at_chunk_boundaries": (
        TorchBroken("gradients_stop_at_chunk_boundaries", _forward_truncated_backprop),
        {"DLA-10.5"}),
    # Bugs the robustness level exists for (DLA-12.10).
    "reads_past_the_tail": (
        Broken("reads_past_the_tail", _NUM, forward=_forward_reads_past_the_tail),
        {"DLA-1.8"}),
    "assumes_contiguous_q": (
        Broken("assumes_contiguous_q", _NUM, forward=_forward_assumes_contiguous),
        {"DLA-1.8"}),
    "writes_into_q": (
        Broken("writes_into_q", _NUM, forward=_forward_scales_q_in_place),
        {"DLA-1.7"}),
    "decode_drops_newest_information": (
        Broken("decode_drops_newest_information", ("streaming",), policies=("dla",),
               forward=_forward_decode_drops_information),
        {"DLA-7.2", "DLA-3.2"}),
}

#: The regime (dla.conformance.regimes) whose checks a variant's bug needs: without it the bug
#: would certify, so the regime is proven to matter (DLA-12.11).
REGIME_OF = {
    "boundary_epsilon": "threshold_ulp",
    "boundary_in_float32": "threshold_ulp",
    "cosine_normalise_then_dot": "repeated_keys",
    "cosine_without_rescaling": "extreme_key_norms",
    "information_by_prefix_sums": "bit_exact_information",
    "last_v_tile_dropped": "wide_heads",
    "scale_from_value_width": "wide_heads",
    "plan_rows_wrap_at_32": "many_rows",
    "decay_as_product_overflows": "long_strong_decay",
    "delta_normalises_keys": "",  # every delta case now has non-unit keys (random_inputs)
    "gradients_stop_at_chunk_boundaries": "gradients_across_chunks",
    "reads_past_the_tail": "canaries",
    "assumes_contiguous_q": "layouts",
    "decode_drops_newest_information": "decode_chain",
}
#: Variants whose bug is a crash, which a check reports as the exception it raised.
CRASHES = frozenset({"fenwick_crashes_on_empty_sequence"})

# ----------------------------------------------------------------- the command
def certify_all(names: list[str] | None = None, profile: str = "ci",
                seed: int = 0) -> list[tuple[str, set[str], set[str], bool, float]]:
    """Certify each variant: ``(name, expected, failed, caught, seconds)`` per variant."""
    from dla.conformance import certify

    rows = []
    for name in names or list(BROKEN):
        impl, expected = BROKEN[name]
        start = time.perf_counter()
        report = certify(impl, profile=profile, seed=seed)
        failed = report.failed_clauses()
        caught = not report.passed and bool(failed & expected)
        rows.append((name, expected, failed, caught, time.perf_counter() - start))
    return rows


def _clauses(ids: set[str]) -> str:
    """Clause ids in spec order (DLA-3.4 before DLA-12.1)."""
    def key(c: str) -> tuple[int, ...]:
        parts = c.removeprefix("DLA-").split(".")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (10**9,)

    return ", ".join(sorted(ids, key=key))


def main(argv: list[str] | None = None) -> int:
    """Print ``name | expected clauses | failed clauses | caught?``; exit 1 if one escaped."""
    parser = argparse.ArgumentParser(prog="python -m dla.conformance.broken",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"variants (default all): {', '.join(BROKEN)}")
    parser.add_argument("--profile", default="ci", choices=("ci", "thorough"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BROKEN)
    if unknown:
        parser.error(f"names: unknown variants {sorted(unknown)}")
    rows = certify_all(args.names, args.profile, args.seed)
    print("name | expected clauses | failed clauses | caught? | seconds")
    for name, expected, failed, caught, secs in rows:
        print(f"{name} | {_clauses(expected)} | {_clauses(failed) or '-'} | "
              f"{'yes' if caught else 'NO'} | {secs:.1f}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
