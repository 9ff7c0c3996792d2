"""The ``robustness`` level (DLA-12.10): the bugs that survive tidy inputs.

Run for every implementation, in each claimed dtype and device:

- **canaries** (DLA-1.8): every argument (the arrays, ``cu_seqlens``, the fields
  of an injected plan and of a carried cache) is passed as a view into a buffer
  whose other bytes are NaN or out-of-range integers; a NaN in a result names
  the argument that leaked (each is tried alone to find it);
- **layouts** (DLA-1.8): transposed ``[B, H, T, D]`` storage, every-other-element
  strides, a storage offset, ``g`` and ``lam`` broadcast with stride 0;
- **untouched and deterministic** (DLA-1.7, DLA-1.9): no argument changes, two
  identical calls agree (bitwise unless ``CLAIMS["determinism"]`` says otherwise);
- **decode chains** (DLA-7.2): a prefill, then hundreds (``ci``) or thousands
  (``thorough``) of one-token calls carrying the cache, against one pass; the
  detail lists the error over its bound per block of 64 tokens;
- **fuzzed calls** (DLA-9): see :mod:`dla.conformance.fuzz`.

Lengths are not multiples of the chunk sizes (``T % 64 != 0``), so a kernel's
tail chunk reads past the view if it reads past ``T``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dla.reference as ref
from dla.cache import CACHE_FIELDS, Cache
from dla.config import Config
from dla.conformance import fuzz
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import Shape, cu_seqlens_for, dyadic_scores, random_inputs
from dla.conformance.layouts import arrange, broadcast
from dla.conformance.tolerance import (
    Comparison,
    compare,
    compare_cache,
    compare_plan,
    position_ratios,
)
from dla.plan import PLAN_FIELDS, Plan

LEVEL = "robustness"
FORWARD_ARRAYS = ("q", "k", "v", "g", "lam", "beta", "scores")
#: Decode chain lengths per profile: past 64 (a chunk, and Fenwick level 7) / past 2048.
CHAIN = {"ci": 100, "thorough": 2100}
#: The prefill before the one-token steps of a chain.
PREFILL = 37


@dataclass
class Call:
    """One forward call in NumPy float64 values, and what the reference returns for it."""

    config: Config
    inputs: dict[str, np.ndarray]
    plan: Plan | None = None
    initial_cache: Cache | None = None
    cu_seqlens: np.ndarray | None = None
    final: bool = False
    features: tuple[str, ...] = ()
    expected: tuple[np.ndarray, Cache | None] | None = field(default=None, repr=False)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {n: self.inputs[n] for n in ("beta", "scores") if n in self.inputs}
        if self.plan is not None:
            kw["plan"] = self.plan
        if self.initial_cache is not None:
            kw["initial_cache"] = self.initial_cache
        if self.cu_seqlens is not None:
            kw["cu_seqlens"] = self.cu_seqlens
        kw["output_final_cache"] = self.final
        return kw

    def reference(self) -> tuple[np.ndarray, Cache | None]:
        if self.expected is None:
            args = [self.inputs[n] for n in ("q", "k", "v", "g", "lam")]
            self.expected = ref.forward(*args, self.config, **self.kwargs())
        return self.expected


def _shape(ctx: Context, T: int = 70) -> Shape:
    return ctx.fit_shape(Shape(B=2, T=T, H=2, K=8, V=8))


def _config(ctx: Context, T: int) -> Config:
    """The first claimed base, policy and score source; dyadic scores keep plans exact."""
    c = ctx.claims
    score = "external" if "external" in c.scores else c.scores[0]
    if c.policies[0] == "fenwick":
        return ctx.fenwick(T, base=c.bases[0], score=score)[0]
    return Config(capacity=ctx.capacity(3), tau=0.5, score=score, base=c.bases[0])


def _inputs(ctx: Context, rng: np.random.Generator, config: Config, s: Shape
            ) -> dict[str, np.ndarray]:
    from dla.conformance.inputs import margin_inputs

    if config.score == "key_cosine" and config.policy == "dla":
        return margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound)[0]
    return random_inputs(rng, s, config, ctx.dtype)


def calls(ctx: Context) -> list[tuple[str, Callable[[], Call]]]:
    """The representative calls of the level: own plan, injected plan, carried cache, packed."""
    s = _shape(ctx)
    config = _config(ctx, s.T)
    streaming = "streaming" in ctx.claims.levels

    def own() -> Call:
        x = _inputs(ctx, ctx.rng(LEVEL, "own"), config, s)
        return Call(config, x, final=streaming, features=("streaming",) if streaming else ())

    def injected() -> Call:
        x = _inputs(ctx, ctx.rng(LEVEL, "injected"), config, s)
        plan = ref.make_plan(config, k=x["k"], scores=x.get("scores"))
        return Call(config, x, plan=plan)

    def carried() -> Call:
        rng = ctx.rng(LEVEL, "carried")
        x = _inputs(ctx, rng, config, s)
        P = 29
        pre = {n: a[:, :P] for n, a in x.items()}
        _, cache = ref.forward(*[pre[n] for n in ("q", "k", "v", "g", "lam")], config,
                               output_final_cache=True,
                               **{n: pre[n] for n in ("beta", "scores") if n in pre})
        post = {n: a[:, P:] for n, a in x.items()}
        assert cache is not None
        return Call(config, post, initial_cache=ctx.quantize_cache(cache), final=True,
                    features=("streaming",))

    def packed() -> Call:
        rng = ctx.rng(LEVEL, "packed")
        sp = dataclasses.replace(s, B=1)
        lengths = [13, 0, 1, sp.T - 14]
        x = random_inputs(rng, sp, config, ctx.dtype)
        if config.score == "external":
            x["scores"] = dyadic_scores(rng, (1, sp.T, sp.H))
        return Call(config, x, cu_seqlens=cu_seqlens_for(lengths), final=streaming,
                    features=("varlen", "streaming") if streaming else ("varlen",))

    out = [("own plan", own), ("injected plan", injected)]
    if streaming:
        out.append(("carried cache", carried))
    if "varlen" in ctx.claims.levels:
        out.append(("packed sequences", packed))
    return out


# ----------------------------------------------------------------- calling in a layout
Layout = Callable[[str, Any], Any]


def _contiguous(name: str, x: Any) -> Any:
    return x


def call_impl(ctx: Context, call: Call, layout: Layout = _contiguous
              ) -> tuple[np.ndarray, Cache | None, Plan]:
    """``forward`` and ``make_plan`` of the implementation with every argument in ``layout``."""
    ad = ctx.adapter
    x = call.inputs
    args, kw = ad.convert_forward_args(x["q"], x["k"], x["v"], x["g"], x["lam"], call.kwargs())
    args = [layout(n, a) for n, a in zip(("q", "k", "v", "g", "lam"), args, strict=True)]
    for n in ("beta", "scores", "cu_seqlens"):
        if kw.get(n) is not None:
            kw[n] = layout(n, kw[n])
    if kw.get("plan") is not None:
        kw["plan"] = Plan(**{f: layout(f"plan.{f}", getattr(kw["plan"], f))
                             for f in PLAN_FIELDS})
    if kw.get("initial_cache") is not None:
        kw["initial_cache"] = Cache(**{f: layout(f"initial_cache.{f}",
                                                 getattr(kw["initial_cache"], f))
                                       for f in CACHE_FIELDS})
    o, cache = ad.finish_forward(ad.impl.forward(*args, call.config, **kw), kw)
    pkw: dict[str, Any] = {"cu_seqlens": call.cu_seqlens, "initial_cache": call.initial_cache}
    if call.config.score == "external":
        pkw["scores"] = x["scores"]
    else:
        pkw["k"] = x["k"]
    pkw = ad.convert_plan_args({n: v for n, v in pkw.items() if v is not None})
    pkw = {n: (Cache(**{f: layout(f"initial_cache.{f}", getattr(v, f)) for f in CACHE_FIELDS})
               if n == "initial_cache" else layout(n, v)) for n, v in pkw.items()}
    plan = ad.plan_to_numpy(ad.impl.make_plan(call.config, **pkw))
    return o, cache, plan


def _compare_all(ctx: Context, call: Call, got: tuple[np.ndarray, Cache | None, Plan],
                 note: str) -> list[Comparison]:
    o_exp, c_exp = call.reference()
    o, cache, plan = got
    kw: dict[str, Any] = {"cu_seqlens": call.cu_seqlens, "initial_cache": call.initial_cache}
    kw.update({"scores": call.inputs["scores"]} if call.config.score == "external"
              else {"k": call.inputs["k"]})
    plan_exp = ref.make_plan(call.config, **{n: v for n, v in kw.items() if v is not None})
    comps = [compare(o, o_exp, ctx.dtype), compare_plan(plan, plan_exp)]
    if c_exp is not None:
        comps.append(compare_cache(cache, c_exp, ctx.dtype) if cache is not None else
                     Comparison(False, "cache", message="no final cache returned (DLA-7.1)"))
    return [c.noted(note) for c in comps]


def _names(call: Call) -> list[str]:
    names = [n for n in FORWARD_ARRAYS if n in call.inputs]
    if call.cu_seqlens is not None:
        names.append("cu_seqlens")
    if call.plan is not None:
        names += [f"plan.{f}" for f in PLAN_FIELDS]
    if call.initial_cache is not None:
        names += [f"initial_cache.{f}" for f in CACHE_FIELDS]
    return names


def _has_nan(got: tuple[np.ndarray, Cache | None, Plan]) -> bool:
    o, cache, _ = got
    floats = [o] + ([] if cache is None else [cache.states, cache.info, cache.prev_key])
    return any(not np.isfinite(np.asarray(a, np.float64)).all() for a in floats)


# ----------------------------------------------------------------- canaries and layouts
def _canary_check(ctx: Context, make: Callable[[], Call], label: str) -> Callable[[], Any]:
    def run() -> list[Comparison]:
        call = make()
        try:
            got = call_impl(ctx, call, lambda n, a: arrange(a, "canary"))
        except Exception as exc:
            leaked = _find_leak(ctx, call, crash=True)
            raise type(exc)(f"{exc} [with canaries around {leaked or 'the arguments'}]") from exc
        comps = _compare_all(ctx, call, got, f"{label}, every argument a view in NaN padding")
        if _has_nan(got) or not all(c.passed for c in comps):
            leaked = _find_leak(ctx, call)
            if leaked:
                comps = [c.noted(f"the bytes around {leaked} leaked into the results (DLA-1.8)")
                         for c in comps]
        return comps

    return run


def _find_leak(ctx: Context, call: Call, crash: bool = False) -> str:
    """The arguments whose canaries alone change the results (or crash the call)."""
    leaks = []
    for name in _names(call):
        def layout(n: str, a: Any, name: str = name) -> Any:
            return arrange(a, "canary") if n == name else a

        try:
            got = call_impl(ctx, call, layout)
        except Exception:
            leaks.append(name)
            continue
        if crash:
            continue
        if _has_nan(got) or not all(c.passed for c in _compare_all(ctx, call, got, "")):
            leaks.append(name)
    return ", ".join(leaks)


def _layout_check(ctx: Context, make: Callable[[], Call], how: str) -> Callable[[], Any]:
    def run() -> list[Comparison]:
        call = make()
        if how == "broadcast":
            call = _constant_gates(call)
            got = call_impl(ctx, call, _broadcast_gates)
        else:
            got = call_impl(ctx, call, lambda n, a: arrange(a, how))
        return _compare_all(ctx, call, got, f"{how} layout")

    return run


def _constant_gates(call: Call) -> Call:
    """``g`` the same for every head and ``lam`` the same everywhere, so both broadcast."""
    x = dict(call.inputs)
    x["g"] = np.repeat(x["g"][:, :, :1], x["g"].shape[2], axis=2)
    x["lam"] = np.broadcast_to(x["lam"][:1, :1, :1], x["lam"].shape).copy()
    return dataclasses.replace(call, inputs=x, expected=None)


def _broadcast_gates(name: str, x: Any) -> Any:
    if name == "g":
        return broadcast(x, 2)
    if name == "lam":
        return broadcast(broadcast(broadcast(x, 0), 1), 2)
    return x


# ----------------------------------------------------------------- untouched, deterministic
def _snapshot(x: Any) -> Any:
    from dla.arrays import is_torch

    return x.detach().clone() if is_torch(x) else np.array(x, copy=True)


def _same(a: Any, b: Any) -> bool:
    from dla.arrays import as_numpy

    return bool(np.array_equal(as_numpy(a), as_numpy(b), equal_nan=True))


def _untouched_check(ctx: Context, make: Callable[[], Call]) -> Callable[[], Any]:
    def run() -> Comparison:
        call = make()
        kept: dict[str, tuple[Any, Any]] = {}

        def layout(name: str, x: Any) -> Any:
            kept[name] = (x, _snapshot(x))
            return x

        call_impl(ctx, call, layout)
        changed = [n for n, (x, before) in kept.items() if not _same(x, before)]
        if changed:
            return Comparison(False, "inputs", error=float(len(changed)), message=(
                f"the call modified {', '.join(changed)}; arguments are read-only (DLA-1.7)"))
        return Comparison(True, "inputs", message=f"{len(kept)} arguments unchanged")

    return run


def _deterministic_check(ctx: Context, make: Callable[[], Call]) -> Callable[[], Any]:
    def run() -> list[Comparison]:
        call = make()
        first = call_impl(ctx, call)
        second = call_impl(ctx, call)
        out = [compare_plan(second[2], first[2])]
        bound = ctx.claims.determinism
        pairs = [("o", first[0], second[0])]
        if first[1] is not None and second[1] is not None:
            pairs += [(f"cache.{f}", getattr(first[1], f), getattr(second[1], f))
                      for f in CACHE_FIELDS]
        for name, a, b in pairs:
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if bound == "bitwise" or not np.issubdtype(a.dtype, np.floating):
                same = bool(np.array_equal(a, b, equal_nan=True))
                out.append(Comparison(same, name, error=float(not same), message=(
                    f"{name}: repeated calls {'agree bit for bit' if same else 'differ'} "
                    f"(DLA-1.9, CLAIMS['determinism'] = {bound!r})")))
            else:
                rel = float(np.linalg.norm(a - b) / max(float(np.linalg.norm(a)), 1e-30))
                out.append(Comparison(rel <= float(bound), name, rel, float(bound), message=(
                    f"{name}: repeated calls differ by relative RMS {rel:.3g} (declared bound "
                    f"{bound}, DLA-1.9)")))
        return out

    return run


# ----------------------------------------------------------------- decode chains
def _chain_check(ctx: Context, config: Config, s: Shape) -> Callable[[], Any]:
    """DLA-7.2: a prefill, then one-token calls carrying the cache, against one pass."""

    def run() -> list[Comparison]:
        rng = ctx.rng(LEVEL, "chain", config.policy)
        x = random_inputs(rng, s, config, ctx.dtype)
        if config.score == "external":
            x["scores"] = dyadic_scores(rng, (s.B, s.T, s.H))
        names = ("q", "k", "v", "g", "lam")

        def kw(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {n: part[n] for n in ("beta", "scores") if n in part}

        o_exp, c_exp = ref.forward(*[x[n] for n in names], config, output_final_cache=True,
                                   **kw(x))
        cache, outs, a = None, [], 0
        for b in [PREFILL, *range(PREFILL + 1, s.T + 1)]:
            piece = {n: arr[:, a:b] for n, arr in x.items()}
            o, cache = ctx.adapter.forward(*[piece[n] for n in names], config,
                                           initial_cache=cache, output_final_cache=True,
                                           **kw(piece))
            outs.append(o)
            a = b
        o = np.concatenate(outs, axis=1)
        ratios = position_ratios(o, o_exp, ctx.dtype).max(axis=(0, 2))
        blocks = [float(ratios[i : i + 64].max()) for i in range(0, s.T, 64)]
        growth = ", ".join(f"{r:.2g}" for r in blocks)
        note = (f"{s.T - PREFILL} one-token calls after a prefill of {PREFILL}; error/bound per "
                f"64 tokens: {growth}")
        comp = compare(o, o_exp, ctx.dtype).noted(note)
        comp = dataclasses.replace(comp, extra={**comp.extra, "error_growth": blocks})
        assert c_exp is not None and cache is not None
        return [comp, compare_cache(cache, c_exp, ctx.dtype).noted("final cache of the chain")]

    return run


def robustness_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    built = calls(ctx)
    for label, make in built:
        cfg = _config(ctx, _shape(ctx).T)  # listing draws nothing: the config is known
        feats = ("streaming",) if label == "carried cache" else (
            ("varlen",) if label == "packed sequences" else ())
        out.append(ctx.check(LEVEL, "DLA-1.8", f"canaries around every argument: {label}",
                             _canary_check(ctx, make, label), config=cfg, features=feats,
                             regime="canaries"))
    label, make = built[-1] if len(built) > 2 else built[0]
    for how in ("transposed", "strided", "offset", "broadcast"):
        out.append(ctx.check(LEVEL, "DLA-1.8", f"{how} layout: {label}",
                             _layout_check(ctx, make, how), config=_config(ctx, 70),
                             regime="layouts"))
    for label, make in built:
        out.append(ctx.check(LEVEL, "DLA-1.7", f"arguments unmodified: {label}",
                             _untouched_check(ctx, make), config=_config(ctx, 70)))
    out.append(ctx.check(LEVEL, "DLA-1.9", "repeated calls agree", _deterministic_check(
        ctx, built[0][1]), config=_config(ctx, 70)))
    T = CHAIN.get(ctx.profile.name, CHAIN["ci"])
    for policy in ("dla", "fenwick"):
        s = ctx.fit_shape(Shape(B=1, T=T, H=2, K=4, V=4))
        score = "external" if "external" in ctx.claims.scores else "key_cosine"
        if policy == "fenwick":
            cfg, Tf = ctx.fenwick(s.T, base=ctx.claims.bases[0], score=score)
            s = dataclasses.replace(s, T=Tf)
        else:
            cfg = Config(capacity=ctx.capacity(4), tau=0.5, score=score,
                         base=ctx.claims.bases[0])
        out.append(ctx.check(LEVEL, "DLA-7.2", f"{policy} decode chain of {s.T - PREFILL} "
                             "one-token calls", _chain_check(ctx, cfg, s), config=cfg, shape=s,
                             features=("streaming",), regime="decode_chain"))
    out.extend(fuzz.fuzz_checks(ctx))
    return out
