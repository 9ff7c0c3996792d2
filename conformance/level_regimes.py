"""The checks of each level that enter the regimes of :mod:`dla.conformance.regimes`.

The main checks of a level run on the profile's small shape; these run the
same comparisons where implementations take other paths (DLA-12.11): exact
plans at one unit in the last place of ``tau`` and on exactly repeated keys,
keys of extreme norm, float64 information ties, many rows, wide and unequal
head sizes, lengths across chunk sizes, long sequences with strong decay.
Every check cites the clause it targets first; the level functions in
``level_plan``, ``level_numeric``, ``level_streaming`` and ``level_varlen``
append them to their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import dla.reference as ref
from dla.config import BASES, Config
from dla.conformance.checks import Check, Context
from dla.conformance.diagnose import decision_context
from dla.conformance.inputs import (
    Shape,
    cu_seqlens_for,
    dyadic_scores,
    margin_inputs,
    piece_lengths,
    quantize,
    random_inputs,
)
from dla.conformance.regime_cases import (
    extreme_norm_keys,
    repeated_keys,
    threshold_scores,
    tie_scores,
    with_scores,
)
from dla.conformance.regimes import regime
from dla.conformance.tolerance import Comparison, compare, compare_cache, compare_plan

Inputs = dict[str, np.ndarray]
#: Thresholds whose float64 value no 16- or 32-bit float represents, and one that all do.
THRESHOLDS = (0.1, 1.1, 0.5)
#: Lengths of the chunk_edges regime: one below and above a chunk size and past 2^7.
EDGE_LENGTHS = (63, 65, 129, 257)
#: The strong decay of the long_strong_decay regime: g in -(2, 4), so G reaches about -1200.
STRONG_DECAY = (2.0, 4.0)


def _shape(ctx: Context, name: str) -> Shape:
    return ctx.fit_shape(regime(name).shape(ctx.profile.name))


def _plan_kw(config: Config, x: Inputs) -> dict[str, np.ndarray]:
    return {"scores": x["scores"]} if config.score == "external" else {"k": x["k"]}


def _merges_safe(config: Config, x: Inputs, bound: float) -> np.ndarray:
    """Rows ``[B, H]`` whose merge decisions all clear ``bound`` (boundaries may be exact ties:
    their scores reach the implementation exactly)."""
    m = ref.plan_with_margins(config, **_plan_kw(config, x))[1].merge
    return (m > bound).all(axis=1) if m.shape[1] else np.ones((m.shape[0], m.shape[2]), bool)


# ----------------------------------------------------------------- inputs per regime
def threshold_inputs(ctx: Context, key: tuple, config: Config, s: Shape) -> Inputs:
    """DLA-3.8: scores at ``tau``'s neighbours in the dtype; rows with a near-tie merge (only
    possible when ``C < T``) are drawn again."""
    rng = ctx.rng("regime", *key)
    x = with_scores(rng, s, config, ctx.dtype,
                    threshold_scores(rng, (s.B, s.T, s.H), config.tau, ctx.dtype))
    for _ in range(50):
        ok = _merges_safe(config, x, ctx.margin_bound)
        if ok.all():
            break
        b, h = np.nonzero(~ok)
        x["scores"][b, :, h] = threshold_scores(rng, (len(b), s.T), config.tau, ctx.dtype)
    return x


def repeated_inputs(ctx: Context, key: tuple, config: Config, s: Shape) -> Inputs:
    """DLA-2.6: scores exactly 0, 1 or 2; exact ties are real ties in every dtype."""
    rng = ctx.rng("regime", *key)
    return random_inputs(rng, s, config, ctx.dtype, keys=repeated_keys(rng, s, ctx.dtype))


def extreme_inputs(ctx: Context, key: tuple, config: Config, s: Shape) -> Inputs:
    """DLA-2.6: keys of extreme norm whose decisions clear the dtype's margin bound."""
    rng = ctx.rng("regime", *key)

    def scale(x: Inputs) -> Inputs:
        return {**x, "k": extreme_norm_keys(rng, x["k"], ctx.dtype)}

    return margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound, transform=scale)[0]


def tie_inputs(ctx: Context, key: tuple, config: Config, s: Shape) -> Inputs:
    """DLA-3.2, DLA-3.9: float64 scores that tie only in the summation order of DLA-3.2."""
    rng = ctx.rng("regime", *key)
    return with_scores(rng, s, config, ctx.dtype, tie_scores(rng, s, config))


def plain_inputs(ctx: Context, key: tuple, config: Config, s: Shape, margins: bool = True,
                 g_range: tuple[float, float] | None = None) -> Inputs:
    """Random inputs; with ``margins``, key-cosine ``dla`` plans on margin-bounded keys
    (DLA-10.3; not needed when the reference plan is injected)."""
    rng = ctx.rng("regime", *key)
    if margins and config.score == "key_cosine" and config.policy == "dla":
        return margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound,
                             transform=lambda x: _regauge(x, rng, ctx.dtype, g_range))[0]
    return _regauge(random_inputs(rng, s, config, ctx.dtype), rng, ctx.dtype, g_range)


def _regauge(x: Inputs, rng: np.random.Generator, dtype: str,
             g_range: tuple[float, float] | None = None) -> Inputs:
    if g_range is None:
        return x
    return {**x, "g": quantize(-rng.uniform(*g_range, x["g"].shape), dtype)}


# ----------------------------------------------------------------- comparisons
def _plan_check(ctx: Context, config: Config, make: Callable[[], Inputs]) -> Callable[[], Any]:
    def run() -> Comparison:
        x = make()
        kw = _plan_kw(config, x)
        why = decision_context(config, **kw)
        return compare_plan(ctx.adapter.make_plan(config, **kw), ref.make_plan(config, **kw),
                            why, config.policy)

    return run


def _forward_check(ctx: Context, config: Config, make: Callable[[], Inputs],
                   inject: bool = False) -> Callable[[], Any]:
    def run() -> Comparison:
        x = make()
        args = [x[n] for n in ("q", "k", "v", "g", "lam")]
        kw: dict[str, Any] = {n: x[n] for n in ("beta", "scores") if n in x}
        if inject:
            kw["plan"] = ref.make_plan(config, **_plan_kw(config, x))
        expected, _ = ref.forward(*args, config, **kw)
        actual, _ = ctx.adapter.forward(*args, config, **kw)
        return compare(actual, expected, ctx.dtype)

    return run


def _pieces_check(ctx: Context, config: Config, make: Callable[[], Inputs],
                  key: tuple) -> Callable[[], Any]:
    def run() -> list[Comparison]:
        x = make()
        T = x["q"].shape[1]
        lengths = piece_lengths(ctx.rng("regime", "pieces", *key), T, ctx.profile.pieces)
        fkw = {n: x[n] for n in ("beta", "scores") if n in x}
        o_exp, c_exp = ref.forward(*[x[n] for n in ("q", "k", "v", "g", "lam")], config,
                                   output_final_cache=True, **fkw)
        outs, cache, a = [], None, 0
        for n in lengths:
            piece = {name: arr[:, a : a + n] for name, arr in x.items()}
            o, cache = ctx.adapter.forward(*[piece[m] for m in ("q", "k", "v", "g", "lam")],
                                           config, initial_cache=cache, output_final_cache=True,
                                           **{m: piece[m] for m in ("beta", "scores")
                                              if m in piece})
            outs.append(o)
            a += n
        assert c_exp is not None and cache is not None
        comps = [compare(np.concatenate(outs, axis=1), o_exp, ctx.dtype),
                 compare_cache(cache, c_exp, ctx.dtype)]
        return [c.noted(f"pieces {lengths}") for c in comps]

    return run


# ----------------------------------------------------------------- the checks
def plan_checks(ctx: Context) -> list[Check]:
    """Exact plans in the threshold, key-cosine and summation-order regimes (DLA-12.1)."""
    out = []
    base = ctx.claims.bases[0]
    s = _shape(ctx, "threshold_ulp")
    for tau in THRESHOLDS:
        cfg = Config(capacity=ctx.capacity(s.T), tau=tau, score="external", base=base)
        out.append(ctx.check("plan", "DLA-3.8, DLA-3.1", f"scores one ulp around tau={tau} in "
                             f"{ctx.dtype}", _plan_check(ctx, cfg,
                                 partial(threshold_inputs, ctx, ("thr", tau), cfg, s)),
                             config=cfg, shape=s, regime="threshold_ulp"))
    s = _shape(ctx, "repeated_keys")
    for C, tau in ((3, 0.0), (2, 1.0), (4, 1.5)):
        cfg = Config(capacity=ctx.capacity(C), tau=tau, base=base)
        out.append(ctx.check("plan", "DLA-2.6, DLA-2.1", f"repeated, 2^j-scaled and negated "
                             f"keys C={cfg.capacity} tau={tau}",
                             _plan_check(ctx, cfg,
                                 partial(repeated_inputs, ctx, ("rep", tau), cfg, s)),
                             config=cfg, shape=s, regime="repeated_keys"))
    s = _shape(ctx, "extreme_key_norms")
    cfg = Config(capacity=ctx.capacity(3), tau=0.5, base=base)
    out.append(ctx.check("plan", "DLA-2.6, DLA-2.2", f"keys of extreme norm in {ctx.dtype}",
                         _plan_check(ctx, cfg, partial(extreme_inputs, ctx, ("ext",), cfg, s)),
                         config=cfg, shape=s, regime="extreme_key_norms"))
    if ctx.dtype == "float64":
        s = _shape(ctx, "bit_exact_information")
        for C, tau in ((3, 0.05), (2, 0.35)):
            cfg = Config(capacity=ctx.capacity(C), tau=tau, score="external", base=base)
            out.append(ctx.check("plan", "DLA-3.2, DLA-3.9", f"float64 information ties "
                                 f"C={cfg.capacity} tau={tau}",
                                 _plan_check(ctx, cfg,
                                     partial(tie_inputs, ctx, ("tie", tau), cfg, s)),
                                 config=cfg, shape=s, regime="bit_exact_information"))
    s = _shape(ctx, "many_rows")
    for score in ("external", "key_cosine"):
        cfg = Config(capacity=ctx.capacity(3), tau=0.5, score=score, base=base)
        out.append(ctx.check("plan", "DLA-1.1, DLA-3.3", f"{s.B * s.H} rows, {score}",
                             _plan_check(ctx, cfg,
                                 partial(plain_inputs, ctx, ("rows", score), cfg, s)),
                             config=cfg, shape=s, regime="many_rows"))
    s = _shape(ctx, "chunk_edges")
    cfg, T = ctx.fenwick(s.T, score="external", base=base)
    s = dataclasses.replace(s, T=T)
    out.append(ctx.check("plan", "DLA-4.1, DLA-4.2", f"fenwick across a new level, T = {T}",
                         _plan_check(ctx, cfg, partial(plain_inputs, ctx, ("fw-edge",), cfg, s)),
                         config=cfg, shape=s, regime="chunk_edges"))
    return out


def end_to_end_checks(ctx: Context) -> list[Check]:
    """Outputs with the implementation's own plan in the same regimes (DLA-12.3)."""
    out = []
    for base in BASES:
        s = _shape(ctx, "threshold_ulp")
        tau = THRESHOLDS[0]
        cfg = Config(capacity=ctx.capacity(s.T), tau=tau, score="external", base=base)
        out.append(ctx.check("end_to_end", "DLA-3.8, DLA-3.1", f"{base} scores one ulp around "
                             f"tau={tau}", _forward_check(ctx, cfg,
                                 partial(threshold_inputs, ctx, ("thr-e",), cfg, s)),
                             config=cfg, shape=s, regime="threshold_ulp"))
        s = _shape(ctx, "repeated_keys")
        cfg = Config(capacity=ctx.capacity(3), tau=0.0, base=base)
        out.append(ctx.check("end_to_end", "DLA-2.6, DLA-2.1", f"{base} repeated keys tau=0",
                             _forward_check(ctx, cfg,
                                 partial(repeated_inputs, ctx, ("rep-e",), cfg, s)),
                             config=cfg, shape=s, regime="repeated_keys"))
        if base == "gla":  # the delta transition I - beta k k^T needs |k| near 1 (DLA-5.2)
            s = _shape(ctx, "extreme_key_norms")
            cfg = Config(capacity=ctx.capacity(3), tau=0.5, base=base)
            out.append(ctx.check("end_to_end", "DLA-2.6, DLA-2.2", "gla keys of extreme norm",
                                 _forward_check(ctx, cfg,
                                     partial(extreme_inputs, ctx, ("ext-e",), cfg, s)),
                                 config=cfg, shape=s, regime="extreme_key_norms"))
        if ctx.dtype == "float64":
            s = _shape(ctx, "bit_exact_information")
            cfg = Config(capacity=ctx.capacity(3), tau=0.05, score="external", base=base)
            out.append(ctx.check("end_to_end", "DLA-3.2, DLA-3.9", f"{base} float64 "
                                 "information ties", _forward_check(
                                     ctx, cfg, partial(tie_inputs, ctx, ("tie-e",), cfg, s)),
                                 config=cfg, shape=s, regime="bit_exact_information"))
        out.extend(_numeric_regimes(ctx, "end_to_end", base, inject=False))
    return out


def execute_checks(ctx: Context) -> list[Check]:
    """Outputs with the reference plan injected in the size regimes (DLA-12.2)."""
    out = []
    for base in BASES:
        out.extend(_numeric_regimes(ctx, "execute", base, inject=True))
    return out


def _policies(ctx: Context, base: str, score: str) -> tuple[tuple[str, str], ...]:
    """The policies a numeric regime runs under: both in ``thorough``; in ``ci`` one per base
    (dla with gla, fenwick with delta), so both policies and both bases are still met."""
    if ctx.profile.name == "thorough":
        return (("dla", score), ("fenwick", score))
    return ((("dla" if base == "gla" else "fenwick"), score),)


def _numeric_regimes(ctx: Context, level: str, base: str, inject: bool) -> list[Check]:
    """Wide heads, many rows, long strong decay and chunk edges, with the reference plan
    injected (``execute``, key-cosine plans) or the implementation's own (``end_to_end``,
    dyadic external scores, exact in every dtype)."""
    out = []
    clause = {"gla": "DLA-5.1", "delta": "DLA-5.2"}[base]
    plans = _policies(ctx, base, "key_cosine" if inject else "external")
    for name, decay in (("wide_heads", None), ("many_rows", None),
                        ("long_strong_decay", STRONG_DECAY)):
        s0 = _shape(ctx, name)
        for policy, score in plans:
            cfg, s = _config(ctx, policy, score, base, s0)
            tag = f"{level}-{name}-{policy}-{base}"
            cite = "DLA-5.6, " + clause if name == "long_strong_decay" else clause + ", DLA-5.3"
            out.append(ctx.check(
                level, cite, f"{policy} {base} {name.replace('_', ' ')} "
                f"(B={s.B} T={s.T} H={s.H} K={s.K} V={s.V})",
                _forward_check(ctx, cfg,
                    partial(plain_inputs, ctx, (tag,), cfg, s, margins=not inject, g_range=decay),
                               inject=inject),
                config=cfg, shape=s, regime=name))
    s0 = _shape(ctx, "chunk_edges")
    lengths = [T for T in EDGE_LENGTHS if T <= s0.T]
    for i, T in enumerate(lengths):
        policy, score = plans[i % len(plans)] if T != s0.T else ("fenwick", plans[0][1])
        cfg, s = _config(ctx, policy, score, base, dataclasses.replace(s0, T=T))
        tag = f"{level}-edge-{T}-{policy}-{base}"
        out.append(ctx.check(
            level, f"{clause}, DLA-5.6", f"{policy} {base} T = {s.T} (chunk edge)",
            _forward_check(ctx, cfg,
                partial(plain_inputs, ctx, (tag,), cfg, s, margins=not inject), inject=inject),
            config=cfg, shape=s, regime="chunk_edges"))
    return out


def _config(ctx: Context, policy: str, score: str, base: str, s: Shape) -> tuple[Config, Shape]:
    if policy == "fenwick":
        cfg, T = ctx.fenwick(s.T, base=base, score=score)
        return cfg, dataclasses.replace(s, T=T)
    return Config(capacity=ctx.capacity(4), tau=0.5, score=score, base=base), s


def streaming_checks(ctx: Context) -> list[Check]:
    """Pieces == one pass in the long-decay and wide-head regimes (DLA-12.4)."""
    out = []
    for base in BASES:
        for name, decay in (("long_strong_decay", STRONG_DECAY), ("wide_heads", None)):
            s = _shape(ctx, name)
            cfg = Config(capacity=ctx.capacity(3), tau=0.5, score="external", base=base)
            tag = ("stream", name, base)
            out.append(ctx.check(
                "streaming", "DLA-7.2", f"dla {base} {name.replace('_', ' ')} in pieces",
                _pieces_check(ctx, cfg, partial(plain_inputs, ctx, tag, cfg, s, g_range=decay),
                              tag),
                config=cfg, shape=s, features=("streaming",), regime=name))
    return out


def varlen_checks(ctx: Context) -> list[Check]:
    """Many packed sequences, empty ones included, against the reference (DLA-12.5)."""
    out = []
    rows = _shape(ctx, "many_rows")
    s = Shape(B=1, T=rows.B * rows.T, H=rows.H, K=rows.K, V=rows.V)
    for base in BASES:
        cfg = Config(capacity=ctx.capacity(3), tau=0.5, score="external", base=base)

        def run(c: Config = cfg, b: str = base) -> Comparison:
            rng = ctx.rng("regime", "varlen-many", b)
            lengths = piece_lengths(rng, s.T, 2 * rows.B + 1)
            cu = cu_seqlens_for(lengths)
            x = random_inputs(rng, s, c, ctx.dtype)
            x["scores"] = dyadic_scores(rng, (1, s.T, s.H))
            args = [x[n] for n in ("q", "k", "v", "g", "lam")]
            kw = {n: x[n] for n in ("beta", "scores") if n in x}
            expected, _ = ref.forward(*args, c, cu_seqlens=cu, **kw)
            actual, _ = ctx.adapter.forward(*args, c, cu_seqlens=cu, **kw)
            return compare(actual, expected, ctx.dtype).noted(f"{len(lengths)} sequences")

        out.append(ctx.check("varlen", "DLA-8.1", f"dla {base} many packed sequences", run,
                             config=cfg, shape=s, features=("varlen",), regime="many_rows"))
    return out
