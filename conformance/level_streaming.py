"""The ``streaming`` level (DLA-7, DLA-12.4).

A sequence cut into pieces of random lengths (a 0-length and a 1-length
piece included), each piece continuing the previous final cache, equals one
pass: outputs and the final cache's float fields by tolerance, its integer
fields exactly. A cache written by the reference is continued by the
implementation and the other way round; an empty cache is a fresh start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

import dla.reference as ref
from dla.cache import Cache
from dla.claims import Needs
from dla.config import BASES, Config
from dla.conformance import level_regimes
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import (
    Shape,
    margin_inputs,
    piece_lengths,
    random_inputs,
)
from dla.conformance.level_numeric import split
from dla.conformance.tolerance import Comparison, compare, compare_cache

Inputs = dict[str, np.ndarray]


def draw(ctx: Context, rng: np.random.Generator, s: Shape, config: Config, **plan_kw) -> Inputs:
    """Inputs whose plan cannot flip in the dtype (margins for key_cosine + dla)."""
    if config.score == "key_cosine" and config.policy == "dla":
        return margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound, **plan_kw)[0]
    return random_inputs(rng, s, config, ctx.dtype)


def slice_t(inputs: Inputs, a: int, b: int) -> Inputs:
    return {n: x[:, a:b] for n, x in inputs.items()}


def ref_pass(inputs: Inputs, config: Config, **kw) -> tuple[np.ndarray, Cache]:
    args, kwa = split(inputs)
    o, cache = ref.forward(*args, config, output_final_cache=True, **kwa, **kw)
    assert cache is not None
    return o, cache


def impl_pass(ctx: Context, inputs: Inputs, config: Config, **kw) -> tuple[np.ndarray, Cache]:
    args, kwa = split(inputs)
    o, cache = ctx.adapter.forward(*args, config, output_final_cache=True, **kwa, **kw)
    if cache is None:
        raise ValueError("forward(..., output_final_cache=True) returned no cache (DLA-7.1)")
    return o, cache


# ------------------------------------------------------------------ streaming
def _pieces(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        inputs = draw(ctx, rng, s, config)
        lengths = piece_lengths(rng, s.T, ctx.profile.pieces)
        o_exp, c_exp = ref_pass(inputs, config)
        outs, cache, a = [], None, 0
        for n in lengths:
            o, cache = impl_pass(ctx, slice_t(inputs, a, a + n), config, initial_cache=cache)
            outs.append(o)
            a += n
        o = np.concatenate(outs, axis=1)
        comps = [compare(o, o_exp, ctx.dtype), compare_cache(cache, c_exp, ctx.dtype)]
        return [c.noted(f"pieces {lengths}") for c in comps]

    return run



def _one_pass_cache(ctx: Context, config: Config, key: tuple,
                    s: Shape) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        inputs = draw(ctx, rng, s, config)
        o_exp, c_exp = ref_pass(inputs, config)
        o, cache = impl_pass(ctx, inputs, config)
        return [compare(o, o_exp, ctx.dtype), compare_cache(cache, c_exp, ctx.dtype)]

    return run


def _cross(
    ctx: Context, config: Config, key: tuple, ref_first: bool, s: Shape
) -> Callable[[], list[Comparison]]:
    """DLA-7.2: a cache of one implementation continued by the other."""

    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        inputs = draw(ctx, rng, s, config)
        P = int(rng.integers(1, s.T))
        pre, post = slice_t(inputs, 0, P), slice_t(inputs, P, s.T)
        if ref_first:
            cache = ctx.quantize_cache(ref_pass(pre, config)[1])
            o_exp, c_exp = ref_pass(post, config, initial_cache=cache)
            o, c = impl_pass(ctx, post, config, initial_cache=cache)
            what = f"reference cache after {P} tokens, continued by the implementation"
        else:
            cache = impl_pass(ctx, pre, config)[1]
            o_full, c_exp = ref_pass(inputs, config)
            o_exp = o_full[:, P:]
            o, c = ref_pass(post, config, initial_cache=cache)
            what = f"implementation cache after {P} tokens, continued by the reference"
        return [
            compare(o, o_exp, ctx.dtype).noted(what),
            compare_cache(c, c_exp, ctx.dtype).noted(what),
        ]

    return run


def _empty_cache(ctx: Context, config: Config, key: tuple,
                 s: Shape) -> Callable[[], list[Comparison]]:
    """DLA-7.3: ``empty_cache`` (position 0) behaves exactly as no cache."""

    def run() -> list[Comparison]:
        rng = ctx.rng("streaming", *key)
        inputs = draw(ctx, rng, s, config)
        empty = ref.empty_cache(s.B, s.H, config.capacity, s.K, s.V)
        o_exp, c_exp = ref_pass(inputs, config)
        o, c = impl_pass(ctx, inputs, config, initial_cache=empty)
        return [compare(o, o_exp, ctx.dtype), compare_cache(c, c_exp, ctx.dtype)]

    return run


def stream_configs(ctx: Context) -> list[tuple[str, Config, int]]:
    """``(label, config, T)`` of each streamed configuration: both bases and score sources
    under ``dla``, and ``fenwick`` (whose capacity may shorten ``T``)."""
    T = ctx.shape.T
    out = []
    for base in BASES:
        out.append((f"dla key_cosine {base}", Config(capacity=ctx.capacity(3), tau=0.5,
                                                     base=base), T))
        out.append((f"dla external {base}", Config(capacity=ctx.capacity(2), tau=0.5,
                                                   score="external", base=base), T))
        cfg, Tf = ctx.fenwick(T, base=base)
        out.append((f"fenwick {base}", cfg, Tf))
    return out


def first_claimed(ctx: Context, configs: list[tuple[str, Config, int]]) -> tuple[str, Config, int]:
    """The first configuration inside the claims (else the first: it is reported not supported)."""
    for item in configs:
        if ctx.claims.unsupported(Needs(config=item[1])) is None:
            return item
    return configs[0]


def streaming_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    for rep in range(ctx.profile.repeats):
        for label, cfg, T in stream_configs(ctx):
            s = dataclasses.replace(ctx.shape, T=T)
            out.append(ctx.check("streaming", "DLA-7.2, DLA-2.3",
                                 f"{label} in pieces == one pass #{rep}",
                                 _pieces(ctx, cfg, ("pieces", label, rep), s), config=cfg,
                                 shape=s, features=("streaming",)))
        label, cfg, T = first_claimed(ctx, stream_configs(ctx))
        s = dataclasses.replace(ctx.shape, T=T)
        for clause, name, fn in (
            ("DLA-7.3", "an empty cache is a fresh start", _empty_cache),
            ("DLA-7.1", "final cache layout", _one_pass_cache),
        ):
            out.append(ctx.check("streaming", clause, f"{label} {name} #{rep}",
                                 fn(ctx, cfg, (name, rep), s), config=cfg, shape=s,
                                 features=("streaming",)))
        for ref_first, name in ((True, "reference cache -> implementation"),
                                (False, "implementation cache -> reference")):
            out.append(ctx.check("streaming", "DLA-7.2", f"{label} {name} #{rep}",
                                 _cross(ctx, cfg, (name, rep), ref_first, s), config=cfg,
                                 shape=s, features=("streaming",)))
    return out + level_regimes.streaming_checks(ctx)
