"""The ``streaming`` (DLA-7) and ``varlen`` (DLA-8) levels.

Streaming: a sequence cut into pieces of random lengths (a 0-length and a
1-length piece included), each piece continuing the previous final cache,
equals one pass: outputs and the final cache's float fields by tolerance,
its integer fields exactly. A cache written by the reference is continued by
the implementation and the other way round. Varlen: packed sequences (empty
and length-1 ones included) equal the reference, and equal separate calls,
so nothing leaks between sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import dla.reference as ref
import numpy as np
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import (
    Shape,
    cu_seqlens_for,
    fenwick_config,
    margin_inputs,
    piece_lengths,
    random_inputs,
)
from dla.conformance.level_numeric import split
from dla.conformance.level_plan import expect_error
from dla.conformance.tolerance import Comparison, compare, compare_cache

from dla.cache import Cache
from dla.config import Config

Inputs = dict[str, np.ndarray]


def draw(ctx: Context, rng: np.random.Generator, s: Shape, config: Config, **plan_kw) -> Inputs:
    """Inputs whose plan cannot flip in the dtype (margins for key_cosine + dla)."""
    if config.score == "key_cosine" and config.policy == "dla":
        return margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound, **plan_kw)[0]
    return random_inputs(rng, s, config, ctx.dtype)


def _slice(inputs: Inputs, a: int, b: int) -> Inputs:
    return {n: x[:, a:b] for n, x in inputs.items()}


def _ref(inputs: Inputs, config: Config, **kw) -> tuple[np.ndarray, Cache]:
    args, kwa = split(inputs)
    o, cache = ref.forward(*args, config, output_final_cache=True, **kwa, **kw)
    assert cache is not None
    return o, cache


def _impl(ctx: Context, inputs: Inputs, config: Config, **kw) -> tuple[np.ndarray, Cache]:
    args, kwa = split(inputs)
    o, cache = ctx.adapter.forward(*args, config, output_final_cache=True, **kwa, **kw)
    if cache is None:
        raise ValueError("forward(..., output_final_cache=True) returned no cache (DLA-7.1)")
    return o, cache


# ------------------------------------------------------------------ streaming
def _pieces(ctx: Context, config: Config, key: tuple) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        s = ctx.profile.shape
        inputs = draw(ctx, rng, s, config)
        lengths = piece_lengths(rng, s.T, ctx.profile.pieces)
        o_exp, c_exp = _ref(inputs, config)
        outs, cache, a = [], None, 0
        for n in lengths:
            o, cache = _impl(ctx, _slice(inputs, a, a + n), config, initial_cache=cache)
            outs.append(o)
            a += n
        o = np.concatenate(outs, axis=1)
        comps = [compare(o, o_exp, ctx.dtype), compare_cache(cache, c_exp, ctx.dtype)]
        return [_tag(c, f"pieces {lengths}") for c in comps]

    return run


def _tag(c: Comparison, what: str) -> Comparison:
    return Comparison(
        c.passed,
        c.field,
        c.rel_rms,
        c.rms_bound,
        c.where,
        c.error,
        c.bound,
        f"{what}: {c.message}",
        c.extra,
    )


def _one_pass_cache(ctx: Context, config: Config, key: tuple) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        inputs = draw(ctx, rng, ctx.profile.shape, config)
        o_exp, c_exp = _ref(inputs, config)
        o, cache = _impl(ctx, inputs, config)
        return [compare(o, o_exp, ctx.dtype), compare_cache(cache, c_exp, ctx.dtype)]

    return run


def _cross(
    ctx: Context, config: Config, key: tuple, ref_first: bool
) -> Callable[[], list[Comparison]]:
    """DLA-7.2: a cache of one implementation continued by the other."""

    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        s = ctx.profile.shape
        inputs = draw(ctx, rng, s, config)
        P = int(rng.integers(1, s.T))
        pre, post = _slice(inputs, 0, P), _slice(inputs, P, s.T)
        if ref_first:
            cache = ctx.quantize_cache(_ref(pre, config)[1])
            o_exp, c_exp = _ref(post, config, initial_cache=cache)
            o, c = _impl(ctx, post, config, initial_cache=cache)
            what = f"reference cache after {P} tokens, continued by the implementation"
        else:
            cache = _impl(ctx, pre, config)[1]
            o_full, c_exp = _ref(inputs, config)
            o_exp = o_full[:, P:]
            o, c = _ref(post, config, initial_cache=cache)
            what = f"implementation cache after {P} tokens, continued by the reference"
        return [
            _tag(compare(o, o_exp, ctx.dtype), what),
            _tag(compare_cache(c, c_exp, ctx.dtype), what),
        ]

    return run


def _empty_cache(ctx: Context, config: Config, key: tuple) -> Callable[[], list[Comparison]]:
    """DLA-7.3: ``empty_cache`` (position 0) behaves exactly as no cache."""

    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        s = ctx.profile.shape
        inputs = draw(ctx, rng, s, config)
        empty = ref.empty_cache(s.B, s.H, config.capacity, s.K, s.V)
        o_exp, c_exp = _ref(inputs, config)
        o, c = _impl(ctx, inputs, config, initial_cache=empty)
        return [compare(o, o_exp, ctx.dtype), compare_cache(c, c_exp, ctx.dtype)]

    return run


def _stream_configs(ctx: Context) -> list[tuple[str, Config]]:
    T = ctx.profile.shape.T
    out = []
    for base in ctx.claims["bases"]:
        if "dla" in ctx.claims["policies"]:
            out.append((f"dla key_cosine {base}", Config(capacity=3, tau=0.5, base=base)))
            out.append(
                (f"dla external {base}", Config(capacity=2, tau=0.5, score="external", base=base))
            )
        if "fenwick" in ctx.claims["policies"] and base == "gla":
            out.append((f"fenwick {base}", fenwick_config(T, base=base)))
    return out


def streaming_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    for rep in range(ctx.profile.repeats):
        for label, cfg in _stream_configs(ctx):
            out.append(
                Check(
                    "streaming",
                    "DLA-7.2, DLA-2.3",
                    f"{label} in pieces == one pass #{rep}",
                    _pieces(ctx, cfg, ("pieces", label, rep)),
                )
            )
        label, cfg = _stream_configs(ctx)[0]
        out.append(
            Check(
                "streaming",
                "DLA-7.3",
                f"{label} an empty cache is a fresh start #{rep}",
                _empty_cache(ctx, cfg, ("empty", rep)),
            )
        )
        out.append(
            Check(
                "streaming",
                "DLA-7.1",
                f"{label} final cache layout #{rep}",
                _one_pass_cache(ctx, cfg, ("layout", rep)),
            )
        )
        out.append(
            Check(
                "streaming",
                "DLA-7.2",
                f"{label} reference cache -> implementation #{rep}",
                _cross(ctx, cfg, ("r2i", rep), ref_first=True),
            )
        )
        out.append(
            Check(
                "streaming",
                "DLA-7.2",
                f"{label} implementation cache -> reference #{rep}",
                _cross(ctx, cfg, ("i2r", rep), ref_first=False),
            )
        )
    return out


# ------------------------------------------------------------------ varlen
def _packed(
    ctx: Context, rng: np.random.Generator, config: Config
) -> tuple[Inputs, np.ndarray, list[int]]:
    s = ctx.profile.shape
    lengths = piece_lengths(rng, s.T, ctx.profile.seq_lengths)
    cu = cu_seqlens_for(lengths)
    inputs = draw(ctx, rng, Shape(1, s.T, s.H, s.K, s.V), config, cu_seqlens=cu)
    return inputs, cu, lengths


def _varlen_vs_packed_ref(
    ctx: Context, config: Config, key: tuple
) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        inputs, cu, lengths = _packed(ctx, ctx.rng("varlen", *key), config)
        with_cache = "streaming" in ctx.claims["levels"]
        args, kw = split(inputs)
        o_exp, c_exp = ref.forward(
            *args, config, cu_seqlens=cu, output_final_cache=with_cache, **kw
        )
        o, c = ctx.adapter.forward(
            *args, config, cu_seqlens=cu, output_final_cache=with_cache, **kw
        )
        comps = [compare(o, o_exp, ctx.dtype)]
        if with_cache:
            if c is None:
                raise ValueError(
                    "forward(..., output_final_cache=True, cu_seqlens=...) returned no cache"
                )
            comps.append(compare_cache(c, c_exp, ctx.dtype))  # type: ignore[arg-type]
        return [_tag(x, f"lengths {lengths}") for x in comps]

    return run


def _no_leak(ctx: Context, config: Config, key: tuple) -> Callable[[], Comparison]:
    """DLA-8.1: the packed output equals separate calls, one per sequence."""

    def run() -> Comparison:
        inputs, cu, lengths = _packed(ctx, ctx.rng("varlen", *key), config)
        args, kw = split(inputs)
        o, _ = ctx.adapter.forward(*args, config, cu_seqlens=cu, **kw)
        parts = []
        for a, b in pairwise(cu):
            sa, skw = split(_slice(inputs, int(a), int(b)))
            parts.append(ref.forward(*sa, config, **skw)[0])
        return _tag(
            compare(o, np.concatenate(parts, axis=1), ctx.dtype),
            f"separate calls, lengths {lengths}",
        )

    return run


def _varlen_cache(ctx: Context, config: Config, key: tuple) -> Callable[[], list[Comparison]]:
    """DLA-8.1 with DLA-7.2: sequence ``n`` starts from row ``n`` of ``initial_cache``."""

    def run() -> list[Comparison]:
        rng = ctx.rng("varlen", *key)
        pre, cu_pre, _ = _packed(ctx, rng, config)
        N = len(cu_pre) - 1
        s = ctx.profile.shape
        lengths = piece_lengths(rng, s.T, N)
        cu = cu_seqlens_for(lengths)
        post = random_inputs(rng, Shape(1, s.T, s.H, s.K, s.V), config, ctx.dtype)
        args, kw = split(pre)
        _, cache = ref.forward(*args, config, cu_seqlens=cu_pre, output_final_cache=True, **kw)
        cache = ctx.quantize_cache(cache)  # type: ignore[arg-type]
        o_exp, c_exp = _ref(post, config, cu_seqlens=cu, initial_cache=cache)
        o, c = _impl(ctx, post, config, cu_seqlens=cu, initial_cache=cache)
        return [compare(o, o_exp, ctx.dtype), compare_cache(c, c_exp, ctx.dtype)]

    return run


def varlen_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    for rep in range(ctx.profile.repeats):
        for label, cfg in _stream_configs(ctx):
            out.append(
                Check(
                    "varlen",
                    "DLA-8.1",
                    f"{label} packed == reference #{rep}",
                    _varlen_vs_packed_ref(ctx, cfg, ("packed", label, rep)),
                )
            )
            out.append(
                Check(
                    "varlen",
                    "DLA-8.1",
                    f"{label} packed == separate calls (no leak) #{rep}",
                    _no_leak(ctx, cfg, ("leak", label, rep)),
                )
            )
        if "streaming" in ctx.claims["levels"] and "dla" in ctx.claims["policies"]:
            cfg = Config(capacity=2, tau=0.5, score="external", base=ctx.claims["bases"][0])
            out.append(
                Check(
                    "varlen",
                    "DLA-8.1, DLA-7.2",
                    f"packed from a carried cache #{rep}",
                    _varlen_cache(ctx, cfg, ("cache", rep)),
                )
            )
    label, cfg = _stream_configs(ctx)[0]
    out.append(Check("varlen", "DLA-9.8", "malformed cu_seqlens raise", _bad_cu(ctx, cfg)))
    return out


def _bad_cu(ctx: Context, config: Config) -> Callable[[], list[Comparison]]:
    """DLA-9.8: decreasing or non-integer ``cu_seqlens`` get ValueError / TypeError."""

    def run() -> list[Comparison]:
        s = ctx.profile.shape
        inputs = random_inputs(
            ctx.rng("varlen", "bad-cu"), Shape(1, 6, s.H, s.K, s.V), config, ctx.dtype
        )
        args, kw = split(inputs)
        decreasing = np.array([0, 4, 2, 6], np.int64)
        floats = np.array([0.0, 3.0, 6.0])
        return [
            expect_error(
                lambda: ctx.adapter.forward(*args, config, cu_seqlens=decreasing, **kw),
                ValueError,
                "cu_seqlens [0, 4, 2, 6]",
            ),
            expect_error(
                lambda: ctx.adapter.impl.forward(
                    *ctx.adapter.convert_forward_args(*args, kw)[0],
                    config,
                    cu_seqlens=ctx.adapter.to_impl(floats, "float32"),
                    **ctx.adapter.convert_forward_args(*args, kw)[1],
                ),
                TypeError,
                "float32 cu_seqlens",
            ),
        ]

    return run
