"""``forward`` and ``make_plan`` of the Triton implementation (DLA-11.1).

Validation is ``dla.reference.validation`` (DLA-9): ``make_plan`` calls it whole;
``forward`` checks the value rules of its float inputs in one device reduction read
once (:mod:`checks`) and leaves the rest to the shared functions. Layout, carried
caches (DLA-7) and packed sequences (DLA-8) are handled here; the kernels live in
``plan_kernel`` and ``forward_kernels``. :func:`prepare` and :func:`execute` are the
two halves of :func:`forward`, shared with the differentiable forward of ``autograd``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dla.cache import Cache
from dla.config import Config
from dla.impls.triton_gpu import checks
from dla.impls.triton_gpu.checks import Pending
from dla.impls.triton_gpu.forward_kernels import launch_forward, previous_partition
from dla.impls.triton_gpu.plan_kernel import DevicePlan, plan_dla, plan_fenwick, token_scores
from dla.impls.triton_gpu.rows import Rows, make_rows
from dla.plan import Plan
from dla.reference import validation as val

CHUNK = 64


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _require_gla(config: Config) -> None:
    if config.base != "gla":
        raise ValueError(
            f"config.base: {config.base!r} is not implemented by dla.impls.triton_gpu "
            "(only base='gla'; use dla.reference or dla.impls.torch_cpu for 'delta') (DLA-11.2)"
        )


def _require_kernel_dtype(q: torch.Tensor) -> None:
    """DLA-1.3, DLA-9.3: the kernels compute in float32 at most; float64 is refused, not cast."""
    if q.dtype not in _DTYPES:
        raise TypeError(
            f"q: dla.impls.triton_gpu supports float32, float16 and bfloat16, got "
            f"{str(q.dtype).removeprefix('torch.')}; use dla.impls.torch_cpu for float64 (DLA-9.3)"
        )


# What the kernels support (DLA-11.2): beyond it a call is refused by name, never computed
# wrongly. Positions and token indices are int32 in the kernels, and 2**30 marks "no slot".
MAX_POSITION = 2**30
MAX_TOKENS = 2**31 - 1
MAX_HEAD_DIM = 256  # one [64, D] tile per operand; measured on an H200 at D = 64 and 128


def _require_supported(call: val.Call, pos0: list[int], chunk: Any) -> None:
    """DLA-11.2: sizes outside what the kernels address are refused, naming the argument."""
    if (isinstance(chunk, bool) or not isinstance(chunk, int) or not 16 <= chunk <= 128
            or chunk & (chunk - 1)):
        raise ValueError(f"chunk: must be a power of two from 16 to 128 (the kernels' tile), "
                         f"got {chunk!r} (DLA-11.2)")
    for name, d in (("q", call.K), ("v", call.V)):
        if d is not None and d > MAX_HEAD_DIM:
            raise ValueError(f"{name}: last dimension {d} exceeds {MAX_HEAD_DIM}, the largest "
                             "head dimension of dla.impls.triton_gpu (DLA-11.2)")
    if call.B * call.T > MAX_TOKENS:
        raise ValueError(f"q: B * T = {call.B * call.T} tokens exceeds {MAX_TOKENS}, the int32 "
                         "token index of dla.impls.triton_gpu (DLA-11.2)")
    end = max((p + n for p, n in zip(pos0, call.lengths, strict=True)), default=0)
    if end > MAX_POSITION:
        name = "initial_cache.position" if any(pos0) else "q"
        raise ValueError(f"{name}: positions up to {end - 1} exceed {MAX_POSITION - 1}, the "
                         "largest position of dla.impls.triton_gpu (DLA-11.2)")


def _flat(x: torch.Tensor | None, dev: torch.device) -> torch.Tensor | None:
    """``[B, T, H, ...] -> [B * T, H, ...]``, contiguous, on ``dev``."""
    if x is None:
        return None
    return x.to(dev).reshape(x.shape[0] * x.shape[1], *x.shape[2:]).contiguous()


def _initial(cache: Cache | None, N: int, H: int, C: int, dev: torch.device):
    """``(count [N,H], starts [N,H,C], info [N,H,C] f64, pos0 [N], prev_key or None, labels)``."""
    if cache is None:
        return (torch.zeros((N, H), dtype=torch.int32, device=dev),
                torch.full((N, H, C), -1, dtype=torch.int32, device=dev),
                torch.zeros((N, H, C), dtype=torch.float64, device=dev),
                [0] * N, None, torch.full((N, H, C), -1, dtype=torch.int64, device=dev))
    def t(x: Any, dt: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(x).to(device=dev, dtype=dt).contiguous()

    return (t(cache.count, torch.int32), t(cache.starts, torch.int32),
            t(cache.info, torch.float64),
            [int(p) for p in torch.as_tensor(cache.position).tolist()],
            t(cache.prev_key, torch.float64), t(cache.labels, torch.int64))


def _setup(call: val.Call, initial_cache: Cache | None, dev: torch.device, chunk: int):
    """The kernels' row layout and carried state of a validated call."""
    init = _initial(initial_cache, call.N, call.H, call.C, dev)
    _require_supported(call, init[3], chunk)
    cu = [a for a, _ in call.segments] + [call.T] if call.packed else None
    rows = make_rows(call.B, call.T, call.H, cu, init[3], chunk, dev)
    return rows, init


def _scores(config: Config, rows: Rows, k: torch.Tensor | None, scores: torch.Tensor | None,
            init) -> torch.Tensor:
    """DLA-2: ``iota [B * T, H]`` float64."""
    if config.score == "external":
        assert scores is not None  # validated: external scores are required (DLA-9.12)
        return scores.to(torch.float64).contiguous()
    return token_scores(k, rows, init[4])


def _device_plan(config: Config, rows: Rows, k: torch.Tensor | None, scores: torch.Tensor | None,
                 init, BTOK: int, H: int) -> tuple[DevicePlan, torch.Tensor | None]:
    """The plan (DLA-3 or DLA-4) and the scores (None under fenwick, which needs none)."""
    C = config.capacity
    if config.policy == "fenwick":  # one plan for every head unless a cache is carried
        return plan_fenwick(rows, BTOK, H, C, shared=init[4] is None), None
    iota = _scores(config, rows, k, scores, init)
    return plan_dla(iota, rows, C, config.tau, init[:3]), iota


def _to_plan(p: DevicePlan, B: int, T: int, H: int) -> Plan:
    C = p.starts.shape[-1]

    def heads(x: torch.Tensor) -> torch.Tensor:  # a plan shared by the heads is expanded
        return x.expand(x.shape[0], H, *x.shape[2:]).contiguous()

    return Plan(boundary=heads(p.boundary).reshape(B, T, H),
                count=heads(p.count).long().reshape(B, T, H),
                starts=heads(p.starts).long().reshape(B, T, H, C),
                labels=heads(p.labels).long().reshape(B, T, H, C))


def _from_plan(plan: Plan, dev: torch.device) -> DevicePlan:
    def f(x: Any, dt: torch.dtype) -> torch.Tensor:
        flat = _flat(torch.as_tensor(x), dev)
        assert flat is not None
        return flat.to(dt).contiguous()

    return DevicePlan(boundary=f(plan.boundary, torch.bool), count=f(plan.count, torch.int32),
                      starts=f(plan.starts, torch.int32), labels=f(plan.labels, torch.int32),
                      final_info=None)


def make_plan(config: Config, *, k: Any = None, scores: Any = None,
              initial_cache: Cache | None = None, cu_seqlens: Any = None,
              chunk: int = CHUNK) -> Plan:
    """DLA-6.1, DLA-11.1: the plan, computed on the device of ``k`` (or ``scores``)."""
    call = val.check_plan_call(config, kind="torch", k=k, scores=scores,
                               initial_cache=initial_cache, cu_seqlens=cu_seqlens)
    dev = (scores if config.score == "external" else k).device
    rows, init = _setup(call, initial_cache, dev, chunk)
    p, _ = _device_plan(config, rows, _flat(k, dev), _flat(scores, dev), init, call.B * call.T,
                        call.H)
    return _to_plan(p, call.B, call.T, call.H)


def _final_info(p: DevicePlan, iota: torch.Tensor, rows: Rows, init) -> torch.Tensor:
    """DLA-3.2, DLA-6.2 through the plan's merges: each final slot's carried informations (oldest
    first) plus its tokens' scores, by prefix sums over the tokens (deterministic, no sync)."""
    if p.final_info is not None:
        return p.final_info
    count0, starts0, info0 = init[:3]
    _, H, C = info0.shape
    n_tok = iota.shape[0]
    if n_tok == 0:
        return info0.clone()
    dev = iota.device
    big = torch.iinfo(torch.int64).max
    j = torch.arange(C, device=dev)
    last = (rows.bos.long() + rows.lens.long() - 1).clamp(min=0)
    cnt = p.count[last].long()  # [N, H]
    lo = torch.where(j < cnt[..., None], p.starts[last].long(), big)  # final partition
    hi = torch.cat([lo[..., 1:], torch.full_like(lo[..., :1], big)], -1)
    p0 = rows.pos0.long()[:, None, None]
    n = rows.lens.long()[:, None, None]
    first = rows.bos.long()[:, None, None]
    a = first + (lo.clamp(max=2**62) - p0).clamp(0, None).minimum(n)  # token range of each slot
    b = first + (hi.clamp(max=2**62) - p0).clamp(0, None).minimum(n)
    cs = torch.zeros((n_tok + 1, H), dtype=torch.float64, device=dev)
    cs[1:] = iota.to(torch.float64).cumsum(0)
    hh = torch.arange(H, device=dev)[None, :, None]
    tokens = cs[b, hh] - cs[a, hh]  # [N, H, C]
    old = torch.where(j < count0[..., None].long(), starts0.long(), big)
    inside = (old[..., None, :] >= lo[..., :, None]) & (old[..., None, :] < hi[..., :, None])
    carried = torch.where(inside & (old[..., None, :] < big), info0[..., None, :], 0.0).sum(-1)
    info = torch.where(j < cnt[..., None], carried + tokens, 0.0)
    return torch.where((rows.lens > 0)[:, None, None], info, info0)


@dataclass
class Prepared:
    """A validated call in the kernels' layout, its plan and the pending value check."""

    call: val.Call
    config: Config
    rows: Rows
    init: tuple
    flat: dict[str, Any]  # q, k, v, g, lam, scores: [B * T, H, ...] contiguous (scores or None)
    plan: DevicePlan
    iota: torch.Tensor | None
    prev: tuple[torch.Tensor, torch.Tensor]
    scale: float
    pending: Pending
    shape: tuple[int, int, int, int, int]  # B, T, H, K, V


def prepare(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, beta: Any = None,
            scores: Any = None, plan: Plan | None = None, initial_cache: Cache | None = None,
            output_final_cache: bool = False, cu_seqlens: Any = None,
            chunk: int = CHUNK) -> Prepared:
    """Validate (DLA-9; the value rules pending, :mod:`checks`), refuse what the kernels do
    not support (DLA-11.2), lay out the rows and make or take the plan (DLA-6.2)."""
    args = {"beta": beta, "scores": scores, "plan": plan, "initial_cache": initial_cache,
            "cu_seqlens": cu_seqlens}

    def full_check() -> val.Call:
        return val.check_forward_call(q, k, v, g, lam, config, kind="torch", **args)

    plain = checks.plain_call(q, k, v, g, lam, config, beta, scores, plan, initial_cache,
                              cu_seqlens)
    if plain:
        call = checks.check_structure(args, *q.shape[:3], q.shape[3], v.shape[3], config)
    else:  # the shared validation, value rules included, raises whatever is wrong
        call = full_check()
    _require_gla(config)
    _require_kernel_dtype(q)
    B, T, H = call.B, call.T, call.H
    K, V = int(q.shape[3]), int(v.shape[3])
    dev = q.device
    rows, init = _setup(call, initial_cache, dev, chunk)
    flat = {n: _flat(x, dev) for n, x in (("q", q), ("k", k), ("v", v), ("g", g), ("lam", lam),
                                          ("scores", scores))}
    flags = None
    if plain and T:
        flags = checks.value_flags(flat["q"], flat["k"], flat["v"], flat["g"], flat["lam"],
                                   flat["scores"])
    pending = checks.Pending(flags, full_check).start()
    if plan is None:
        p, iota = _device_plan(config, rows, flat["k"], flat["scores"], init, B * T, H)
    else:  # an injected plan is executed as given (DLA-6.2): no scan
        p, iota = _from_plan(plan, dev), None
    prev = previous_partition(p, rows, init[0], init[1])
    return Prepared(call, config, rows, init, flat, p, iota, prev, config.resolved_scale(K),
                    pending, (B, T, H, K, V))


def carried_states(initial_cache: Cache | None, dev: torch.device) -> torch.Tensor | None:
    """The carried states in float32 (DLA-7.1), or None for a fresh call."""
    if initial_cache is None:
        return None
    return torch.as_tensor(initial_cache.states).to(dev, torch.float32).contiguous()  # DLA-1.8


def execute(prep: Prepared, states0: torch.Tensor | None, keep_snapshots: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The forward kernels (DLA-5): ``o [B, T, H, V]``, the final states ``[N, H, C, K, V]``
    float32 (unused slots zero) and, with ``keep_snapshots``, the state snapshots."""
    f = prep.flat
    B, T, H, _, V = prep.shape
    o, final, h = launch_forward(f["q"], f["k"], f["v"], f["g"], f["lam"], prep.plan, prep.rows,
                                 states0, prep.prev, prep.scale, f["q"].dtype)
    count = final_count(prep)
    used = torch.arange(final.shape[2], device=final.device) < count[..., None]
    final = torch.where(used[..., None, None], final, 0.0)  # unused slots: zeros (DLA-7.1)
    return o.reshape(B, T, H, V), final, (h if keep_snapshots else None)


def final_count(prep: Prepared) -> torch.Tensor:
    """``[N, H]`` int64: the number of states after each sequence's last token."""
    p, rows, count0 = prep.plan, prep.rows, prep.init[0]
    if p.count.shape[0] == 0:
        return count0.long()
    last = (rows.bos.long() + rows.lens.long() - 1).clamp(min=0)
    return torch.where((rows.lens > 0)[:, None], p.count[last], count0).long()


def forward(q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, beta: Any = None,
            scores: Any = None, plan: Plan | None = None, initial_cache: Cache | None = None,
            output_final_cache: bool = False, cu_seqlens: Any = None,
            chunk: int = CHUNK) -> tuple[torch.Tensor, Cache | None]:
    """DLA-5, DLA-11.1: ``o [B, T, H, V]`` in ``q``'s dtype and optionally the final cache."""
    prep = prepare(q, k, v, g, lam, config, beta=beta, scores=scores, plan=plan,
                   initial_cache=initial_cache, output_final_cache=output_final_cache,
                   cu_seqlens=cu_seqlens, chunk=chunk)
    o, final, _ = execute(prep, carried_states(initial_cache, q.device))
    cache = final_cache(prep, final) if output_final_cache else None
    prep.pending.check()
    return o, cache


def final_cache(prep: Prepared, states: torch.Tensor) -> Cache:
    """DLA-7.1: the cache after the last token of every sequence (``states [N, H, C, K, V]``)."""
    iota = prep.iota
    if iota is None and prep.plan.final_info is None:
        iota = _scores(prep.config, prep.rows, prep.flat["k"], prep.flat["scores"], prep.init)
    assert iota is not None or prep.plan.final_info is not None
    K = prep.shape[3]
    return _final_cache(prep.plan, iota, prep.rows, prep.init, states, prep.flat["k"], K)


def _final_cache(p: DevicePlan, iota, rows: Rows, init, states, kf, K: int) -> Cache:
    """DLA-7.1: the cache after the last token of every sequence (``states [N, H, C, K, V]``)."""
    count0, starts0 = init[0], init[1]
    N, H, _ = starts0.shape
    has = rows.lens > 0
    pk0 = init[4] if init[4] is not None else torch.zeros((N, H, K), dtype=torch.float64,
                                                          device=states.device)
    if p.count.shape[0] == 0:  # no tokens at all: the cache passes through
        count, starts, labels, prev_key = count0.long(), starts0.long(), init[5], pk0
    else:
        last = (rows.bos.long() + rows.lens.long() - 1).clamp(min=0)
        count = torch.where(has[:, None], p.count[last], count0).long()
        starts = torch.where(has[:, None, None], p.starts[last], starts0).long()
        labels = torch.where(has[:, None, None], p.labels[last].long(), init[5])
        prev_key = torch.where(has[:, None, None], kf[last].to(torch.float64), pk0)
    prev_key = prev_key.to(torch.float64 if kf.dtype == torch.float64 else torch.float32)
    return Cache(states=states, info=_final_info(p, iota, rows, init), starts=starts, labels=labels,
                 count=count, prev_key=prev_key,
                 position=(rows.pos0.long() + rows.lens.long()))
