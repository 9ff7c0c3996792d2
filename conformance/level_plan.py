"""The ``plan`` level: exact plan parity with the reference (DLA-6.2).

Key-cosine plans are checked on inputs whose decision margins exceed the
dtype's bound; external scores on a dyadic grid, where ties are exact and the
strict boundary (DLA-3.1) and the oldest-pair tie-break (DLA-3.4) decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import dla.reference as ref
from dla.config import SCORES, Config
from dla.conformance import level_regimes
from dla.conformance.checks import Check, Context
from dla.conformance.diagnose import decision_context
from dla.conformance.inputs import (
    Shape,
    cu_seqlens_for,
    dyadic_scores,
    margin_inputs,
    piece_lengths,
)
from dla.conformance.tolerance import Comparison, compare_error, compare_plan

LEVEL = "plan"


def expect_error(fn: Callable[[], Any], exc_type: type[BaseException], what: str,
                 argument: str) -> Comparison:
    """Passes when ``fn()`` raises ``exc_type`` with a message naming ``argument`` and
    citing its clause (DLA-9.13: bad input gets a clear error)."""
    try:
        fn()
    except Exception as exc:
        return compare_error(exc, exc_type.__name__, argument).noted(what)
    return compare_error(None, exc_type.__name__, argument).noted(what)


def _zero_some_keys(rng: np.random.Generator) -> Callable[[dict], dict]:
    def transform(inputs: dict) -> dict:
        k = inputs["k"].copy()
        mask = rng.random(k.shape[:3]) < 0.15
        k[mask] = 0.0
        return {**inputs, "k": k}

    return transform


def _key_cosine_parity(
    ctx: Context,
    config: Config,
    key: tuple,
    s: Shape,
    zero_keys: bool = False,
) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng(LEVEL, *key)
        tr = _zero_some_keys(rng) if zero_keys else None
        inputs, margin = margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound, transform=tr)
        expected = ref.make_plan(config, k=inputs["k"])
        actual = ctx.adapter.make_plan(config, k=inputs["k"])
        why = decision_context(config, k=inputs["k"])
        return compare_plan(actual, expected, why, config.policy).with_note(
            f"min margin {margin:.3g}")

    return run


def _dyadic_parity(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], Comparison]:
    def run() -> Comparison:
        scores = dyadic_scores(ctx.rng(LEVEL, *key), (s.B, s.T, s.H))
        expected = ref.make_plan(config, scores=scores)
        actual = ctx.adapter.make_plan(config, scores=scores)
        return compare_plan(actual, expected, decision_context(config, scores=scores),
                            config.policy)

    return run


def _streaming_parity(ctx: Context, config: Config, key: tuple,
                      s: Shape) -> Callable[[], Comparison]:
    """DLA-2.3, DLA-7.2: planning a suffix from a carried cache."""

    def run() -> Comparison:
        rng = ctx.rng(LEVEL, *key)
        inputs, _ = margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound)
        P = int(rng.integers(1, s.T))
        pre = {n: x[:, :P] for n, x in inputs.items()}
        _, cache = ref.forward(
            pre["q"], pre["k"], pre["v"], pre["g"], pre["lam"], config, output_final_cache=True
        )
        cache = ctx.quantize_cache(cache)
        k = inputs["k"][:, P:]
        expected = ref.make_plan(config, k=k, initial_cache=cache)
        actual = ctx.adapter.make_plan(config, k=k, initial_cache=cache)
        return compare_plan(actual, expected,
                            decision_context(config, k=k, initial_cache=cache), config.policy)

    return run


def _varlen_parity(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], Comparison]:
    """DLA-8.1: each packed sequence is planned fresh."""

    def run() -> Comparison:
        rng = ctx.rng(LEVEL, *key)
        lengths = piece_lengths(rng, s.T, ctx.profile.seq_lengths)
        cu = cu_seqlens_for(lengths)
        scores = dyadic_scores(rng, (1, s.T, s.H))
        expected = ref.make_plan(config, scores=scores, cu_seqlens=cu)
        actual = ctx.adapter.make_plan(config, scores=scores, cu_seqlens=cu)
        return compare_plan(actual, expected,
                            decision_context(config, scores=scores, cu_seqlens=cu), config.policy)

    return run


def checks(ctx: Context) -> list[Check]:
    """Every check of the plan level for this context."""
    out: list[Check] = []
    s = ctx.shape
    packed = dataclasses.replace(s, B=1)
    for rep in range(ctx.profile.repeats):
        for C, tau in ((1, 0.5), (3, 0.5), (5, 1.0)):
            cfg = ctx.plan_config(capacity=C, tau=tau)
            out.append(ctx.check(
                LEVEL, "DLA-2.1, DLA-3.3",
                f"dla key_cosine C={C} tau={tau} margin>{ctx.margin_bound:g} #{rep}",
                _key_cosine_parity(ctx, cfg, ("kc", C, tau, rep), s), config=cfg, shape=s))
        cfg = ctx.plan_config(capacity=ctx.capacity(3), tau=0.5)
        out.append(ctx.check(
            LEVEL, "DLA-2.2", f"dla key_cosine zero-norm keys #{rep}",
            _key_cosine_parity(ctx, cfg, ("zero", rep), s, zero_keys=True), config=cfg, shape=s))
        for C, tau in ((2, 0.5), (4, 0.75), (3, 0.0)):
            cfg = ctx.plan_config(capacity=C, tau=tau, score="external")
            out.append(ctx.check(
                LEVEL, "DLA-3.4, DLA-3.1, DLA-2.7, DLA-10.8",
                f"dla external dyadic ties C={C} tau={tau} #{rep}",
                _dyadic_parity(ctx, cfg, ("dy", C, tau, rep), s), config=cfg, shape=s))
        cfg = ctx.plan_config(capacity=max(s.T, 1), tau=-1.0, score="external")
        out.append(ctx.check(
            LEVEL, "DLA-3.7, DLA-3.1", f"dla tau<0 C>=T: one state per token #{rep}",
            _dyadic_parity(ctx, cfg, ("pertoken", rep), s), config=cfg, shape=s))
        for score in SCORES:
            cfg, T = ctx.fenwick(s.T, score=score, base=ctx.claims.bases[0])
            shape = dataclasses.replace(s, T=T)
            run = (_dyadic_parity(ctx, cfg, ("fw", rep), shape) if score == "external" else
                   _key_cosine_parity(ctx, cfg, ("fw-kc", rep), shape))
            out.append(ctx.check(LEVEL, "DLA-4.1, DLA-4.2", f"fenwick {score} C={cfg.capacity} "
                                 f"#{rep}", run, config=cfg, shape=shape))
        cfg = ctx.plan_config(capacity=ctx.capacity(3), tau=0.5)
        out.append(ctx.check(
            LEVEL, "DLA-2.3, DLA-7.2", f"dla key_cosine from a carried cache #{rep}",
            _streaming_parity(ctx, cfg, ("stream", rep), s), config=cfg, shape=s,
            features=("streaming",)))
        cfg = ctx.plan_config(capacity=ctx.capacity(3), tau=0.5, score="external")
        out.append(ctx.check(
            LEVEL, "DLA-8.1", f"dla external cu_seqlens #{rep}",
            _varlen_parity(ctx, cfg, ("varlen", rep), packed), config=cfg, shape=packed,
            features=("varlen",)))
    cfg, T = ctx.fenwick(s.T, score="external", base=ctx.claims.bases[0])
    if cfg.capacity >= 2:
        small = ctx.plan_config(capacity=cfg.capacity - 1, policy="fenwick", score="external")
        shape = dataclasses.replace(s, T=T)
        out.append(ctx.check(LEVEL, "DLA-9.11", "fenwick capacity too small raises ValueError",
                             lambda: _fenwick_too_small(ctx, small, shape),
                             config=dataclasses.replace(small, capacity=cfg.capacity),
                             shape=shape))
    return out + level_regimes.plan_checks(ctx)


def _fenwick_too_small(ctx: Context, cfg: Config, s: Shape) -> Comparison:
    scores = dyadic_scores(ctx.rng(LEVEL, "fw-small"), (s.B, s.T, s.H))
    return expect_error(
        lambda: ctx.adapter.make_plan(cfg, scores=scores),
        ValueError,
        f"make_plan fenwick C={cfg.capacity} T={s.T}",
        "capacity",
    )
