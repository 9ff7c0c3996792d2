"""The ``varlen`` level (DLA-8, DLA-12.5).

Packed sequences (empty and length-1 ones included) equal the reference, and
equal separate calls, so nothing leaks between sequences; with streaming
claimed, sequence ``n`` continues row ``n`` of a carried cache; malformed
``cu_seqlens`` raise the errors of DLA-9.8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import pairwise

import numpy as np

import dla.reference as ref
from dla.config import Config
from dla.conformance import level_regimes
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import Shape, cu_seqlens_for, piece_lengths, random_inputs
from dla.conformance.level_numeric import split
from dla.conformance.level_plan import expect_error
from dla.conformance.level_streaming import (
    Inputs,
    draw,
    first_claimed,
    impl_pass,
    ref_pass,
    slice_t,
    stream_configs,
)
from dla.conformance.tolerance import Comparison, compare, compare_cache


def _packed(
    ctx: Context, rng: np.random.Generator, config: Config, s: Shape
) -> tuple[Inputs, np.ndarray, list[int]]:
    lengths = piece_lengths(rng, s.T, ctx.profile.seq_lengths)
    cu = cu_seqlens_for(lengths)
    inputs = draw(ctx, rng, Shape(1, s.T, s.H, s.K, s.V), config, cu_seqlens=cu)
    return inputs, cu, lengths


def _varlen_vs_packed_ref(
    ctx: Context, config: Config, key: tuple, s: Shape
) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        inputs, cu, lengths = _packed(ctx, ctx.rng("varlen", *key), config, s)
        with_cache = "streaming" in ctx.claims.levels
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
        return [x.noted(f"lengths {lengths}") for x in comps]

    return run


def _no_leak(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], Comparison]:
    """DLA-8.1: the packed output equals separate calls, one per sequence."""

    def run() -> Comparison:
        inputs, cu, lengths = _packed(ctx, ctx.rng("varlen", *key), config, s)
        args, kw = split(inputs)
        o, _ = ctx.adapter.forward(*args, config, cu_seqlens=cu, **kw)
        parts = []
        for a, b in pairwise(cu):
            sa, skw = split(slice_t(inputs, int(a), int(b)))
            parts.append(ref.forward(*sa, config, **skw)[0])
        return compare(o, np.concatenate(parts, axis=1), ctx.dtype).noted(
            f"separate calls, lengths {lengths}"
        )

    return run


def _varlen_cache(ctx: Context, config: Config, key: tuple,
                  s: Shape) -> Callable[[], list[Comparison]]:
    """DLA-8.1 with DLA-7.2: sequence ``n`` starts from row ``n`` of ``initial_cache``."""

    def run() -> list[Comparison]:
        rng = ctx.rng("varlen", *key)
        pre, cu_pre, _ = _packed(ctx, rng, config, s)
        N = len(cu_pre) - 1
        lengths = piece_lengths(rng, s.T, N)
        cu = cu_seqlens_for(lengths)
        post = random_inputs(rng, Shape(1, s.T, s.H, s.K, s.V), config, ctx.dtype)
        args, kw = split(pre)
        _, cache = ref.forward(*args, config, cu_seqlens=cu_pre, output_final_cache=True, **kw)
        cache = ctx.quantize_cache(cache)  # type: ignore[arg-type]
        o_exp, c_exp = ref_pass(post, config, cu_seqlens=cu, initial_cache=cache)
        o, c = impl_pass(ctx, post, config, cu_seqlens=cu, initial_cache=cache)
        return [compare(o, o_exp, ctx.dtype), compare_cache(c, c_exp, ctx.dtype)]

    return run


def varlen_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    packed = dataclasses.replace(ctx.shape, B=1)
    for rep in range(ctx.profile.repeats):
        for label, cfg, T in stream_configs(ctx):
            s = dataclasses.replace(packed, T=T)
            out.append(ctx.check("varlen", "DLA-8.1", f"{label} packed == reference #{rep}",
                                 _varlen_vs_packed_ref(ctx, cfg, ("packed", label, rep), s),
                                 config=cfg, shape=s, features=("varlen",)))
            out.append(ctx.check("varlen", "DLA-8.1",
                                 f"{label} packed == separate calls (no leak) #{rep}",
                                 _no_leak(ctx, cfg, ("leak", label, rep), s), config=cfg,
                                 shape=s, features=("varlen",)))
        cfg = Config(capacity=ctx.capacity(2), tau=0.5, score="external",
                     base=ctx.claims.bases[0])
        out.append(ctx.check("varlen", "DLA-8.1, DLA-7.2", f"packed from a carried cache #{rep}",
                             _varlen_cache(ctx, cfg, ("cache", rep), packed), config=cfg,
                             shape=packed, features=("varlen", "streaming")))
    label, cfg, T = first_claimed(ctx, stream_configs(ctx))
    out.append(ctx.check("varlen", "DLA-9.8", "malformed cu_seqlens raise", _bad_cu(ctx, cfg),
                         config=cfg, features=("varlen",)))
    return out + level_regimes.varlen_checks(ctx)


def _bad_cu(ctx: Context, config: Config) -> Callable[[], list[Comparison]]:
    """DLA-9.8: decreasing or non-integer ``cu_seqlens`` get ValueError / TypeError."""

    def run() -> list[Comparison]:
        s = ctx.shape
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
                "cu_seqlens",
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
                "cu_seqlens",
            ),
        ]

    return run
