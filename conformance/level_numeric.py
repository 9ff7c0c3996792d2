"""The ``execute`` and ``end_to_end`` levels: outputs within the tolerance model (DLA-10).

``execute`` injects the reference plan (DLA-6.2), so it certifies the numeric
path alone, whatever the implementation's own scores would decide.
``end_to_end`` lets the implementation plan for itself, on inputs whose
decisions cannot flip in its dtype: key-cosine inputs with every margin above
the dtype's bound, or dyadic external scores (DLA-10.3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import dla.reference as ref
from dla.config import BASES, POLICIES, SCORES, Config
from dla.conformance import level_regimes
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import (
    Shape,
    dyadic_scores,
    margin_inputs,
    near_tie_keys,
    random_inputs,
)
from dla.conformance.tolerance import Comparison, compare

BASE_CLAUSE = {"gla": "DLA-5.1", "delta": "DLA-5.2"}


def split(inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """``(q, k, v, g, lam)`` and the keyword inputs (``beta``, ``scores``) of ``forward``."""
    args = [inputs[n] for n in ("q", "k", "v", "g", "lam")]
    kw: dict[str, np.ndarray] = {n: inputs[n] for n in ("beta", "scores") if n in inputs}
    return args, kw


def _config(ctx: Context, C: int, tau: float, policy: str, base: str,
            **kw: Any) -> tuple[Config, int]:
    """A config of ``policy`` and the length to use with it (fenwick's capacity fixes it)."""
    if policy == "fenwick":
        return ctx.fenwick(ctx.shape.T, base=base, **kw)
    return Config(capacity=ctx.capacity(C), tau=tau, policy=policy, base=base, **kw), ctx.shape.T


# ------------------------------------------------------------------ execute
def _execute(
    ctx: Context,
    config: Config,
    key: tuple,
    s: Shape,
    *,
    foreign_plan: bool = False,
    near_ties: bool = False,
) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("execute", *key)
        keys = near_tie_keys(rng, s, config.tau) if near_ties else None
        inputs = random_inputs(rng, s, config, ctx.dtype, keys=keys)
        args, kw = split(inputs)
        if foreign_plan:  # a plan the implementation's own scores would not produce
            other = Config(capacity=config.capacity, tau=0.5, score="external")
            plan = ref.make_plan(other, scores=dyadic_scores(rng, (s.B, s.T, s.H)))
        else:
            plan = ref.make_plan(config, k=inputs["k"], scores=kw.get("scores"))
        expected, _ = ref.forward(*args, config, plan=plan, **kw)
        actual, _ = ctx.adapter.forward(*args, config, plan=plan, **kw)
        return compare(actual, expected, ctx.dtype)

    return run


def execute_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    s = ctx.shape
    for rep in range(ctx.profile.repeats):
        for base in BASES:
            for policy in POLICIES:
                for C, tau in ((1, 0.5), (3, 0.5)):
                    if policy == "fenwick" and C != 3:
                        continue
                    cfg, T = _config(ctx, C, tau, policy, base)
                    shape = dataclasses.replace(s, T=T)
                    name = f"{policy} {base} C={cfg.capacity} tau={tau} plan injected #{rep}"
                    clause = BASE_CLAUSE[base]
                    if policy == "fenwick" and base == "gla":  # Log-Linear Attention itself
                        clause = f"DLA-4.3, {clause}"
                    out.append(ctx.check("execute", clause, name,
                                         _execute(ctx, cfg, (policy, base, C, tau, rep), shape),
                                         config=cfg, shape=shape))
            for policy in POLICIES:
                cfg, T = _config(ctx, 3, 0.5, policy, base)
                shape = dataclasses.replace(s, T=T)
                out.append(ctx.check(
                    "execute", "DLA-6.2", f"{policy} {base} injected plan is used, not the own "
                    f"#{rep}", _execute(ctx, cfg, ("foreign", policy, base, rep), shape,
                                        foreign_plan=True),
                    config=cfg, shape=shape, features=("foreign_plan",)))
                cfg, T = _config(ctx, 4, 1.0, policy, base, scale=0.7)
                shape = dataclasses.replace(s, T=T)
                out.append(ctx.check(
                    "execute", "DLA-5.3, DLA-1.2", f"{policy} {base} config.scale = 0.7 is used "
                    f"#{rep}", _execute(ctx, cfg, ("scale", policy, base, rep), shape),
                    config=cfg, shape=shape))
            cfg = Config(capacity=ctx.capacity(3), tau=0.5, base=base)
            out.append(ctx.check(
                "execute", "DLA-10.3, DLA-6.2",
                f"near-tie key_cosine scores {base}, reference plan injected #{rep}",
                _execute(ctx, cfg, ("near", base, rep), s, near_ties=True),
                config=cfg, shape=s, features=("foreign_plan",)))
    for policy in POLICIES:
        cfg, _ = _config(ctx, 2, 0.5, policy, ctx.claims.bases[0])
        empty = dataclasses.replace(s, T=0)
        out.append(ctx.check("execute", "DLA-1.1", f"{policy} T = 0 gives an empty output",
                             _execute(ctx, cfg, ("empty", policy), empty),
                             config=cfg, shape=empty))
    return out + level_regimes.execute_checks(ctx)


# ------------------------------------------------------------------ end to end
def _e2e_margin(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("end_to_end", *key)
        inputs, margin = margin_inputs(rng, s, config, ctx.dtype, ctx.margin_bound)
        args, kw = split(inputs)
        expected, _ = ref.forward(*args, config, **kw)
        actual, _ = ctx.adapter.forward(*args, config, **kw)
        return compare(actual, expected, ctx.dtype).with_note(f"min margin {margin:.3g}")

    return run


def _e2e_dyadic(ctx: Context, config: Config, key: tuple, s: Shape) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("end_to_end", *key)
        inputs = random_inputs(rng, s, config, ctx.dtype)
        args, kw = split(inputs)
        expected, _ = ref.forward(*args, config, **kw)
        actual, _ = ctx.adapter.forward(*args, config, **kw)
        return compare(actual, expected, ctx.dtype)

    return run


def end_to_end_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    s = ctx.shape
    bound = ctx.margin_bound
    for rep in range(ctx.profile.repeats):
        for base in BASES:
            for C, tau in ((2, 0.5), (4, 1.0)):
                cfg = Config(capacity=ctx.capacity(C), tau=tau, base=base)
                out.append(ctx.check(
                    "end_to_end", f"DLA-3.3, {BASE_CLAUSE[base]}",
                    f"dla key_cosine {base} C={cfg.capacity} tau={tau} margin>{bound:g} #{rep}",
                    _e2e_margin(ctx, cfg, ("kc", base, C, tau, rep), s), config=cfg, shape=s))
            cfg = Config(capacity=ctx.capacity(3), tau=0.5, score="external", base=base)
            out.append(ctx.check(
                "end_to_end", "DLA-3.4", f"dla external dyadic {base} C={cfg.capacity} #{rep}",
                _e2e_dyadic(ctx, cfg, ("dy", base, rep), s), config=cfg, shape=s))
            for score in SCORES:
                cfg, T = ctx.fenwick(s.T, base=base, score=score)
                shape = dataclasses.replace(s, T=T)
                clause = "DLA-4.3" if base == "gla" else "DLA-4.1, DLA-5.2"
                out.append(ctx.check(
                    "end_to_end", clause, f"fenwick {base} {score} C={cfg.capacity} #{rep}",
                    _e2e_dyadic(ctx, cfg, ("fw", base, score, rep), shape),
                    config=cfg, shape=shape))
    return out + level_regimes.end_to_end_checks(ctx)
