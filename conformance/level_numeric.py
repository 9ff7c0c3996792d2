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

import numpy as np

import dla.reference as ref
from dla.config import Config
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import (
    dyadic_scores,
    fenwick_config,
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


def _config(C: int, tau: float, policy: str, base: str, T: int, **kw) -> Config:
    if policy == "fenwick":
        return fenwick_config(T, base=base, **kw)
    return Config(capacity=C, tau=tau, policy=policy, base=base, **kw)


# ------------------------------------------------------------------ execute
def _execute(
    ctx: Context,
    config: Config,
    key: tuple,
    *,
    foreign_plan: bool = False,
    near_ties: bool = False,
    T: int | None = None,
) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("execute", *key)
        s = ctx.profile.shape if T is None else dataclasses.replace(ctx.profile.shape, T=T)
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
    T = ctx.profile.shape.T
    for rep in range(ctx.profile.repeats):
        for base in ctx.claims["bases"]:
            for policy in ctx.claims["policies"]:
                for C, tau, scale in ((1, 0.5, None), (3, 0.5, None), (4, 1.0, 0.7)):
                    if policy == "fenwick" and C != 3:
                        continue
                    cfg = _config(C, tau, policy, base, T, scale=scale)
                    name = (
                        f"{policy} {base} C={cfg.capacity} tau={tau}"
                        f"{'' if scale is None else f' scale={scale}'} plan injected #{rep}"
                    )
                    clause = BASE_CLAUSE[base] + (", DLA-5.3" if scale is not None else "")
                    clause += ", DLA-4.3" if policy == "fenwick" and base == "gla" else ""
                    out.append(
                        Check(
                            "execute", clause, name, _execute(ctx, cfg, (policy, base, C, tau, rep))
                        )
                    )
        if "dla" in ctx.claims["policies"]:
            base = ctx.claims["bases"][0]
            cfg = Config(capacity=3, tau=0.5, base=base)
            out.append(
                Check(
                    "execute",
                    "DLA-6.2",
                    f"injected plan is used, not the own #{rep}",
                    _execute(ctx, cfg, ("foreign", rep), foreign_plan=True),
                )
            )
            out.append(
                Check(
                    "execute",
                    "DLA-6.2, DLA-10.3",
                    f"near-tie key_cosine scores, reference plan injected #{rep}",
                    _execute(ctx, cfg, ("near", rep), near_ties=True),
                )
            )
    base = ctx.claims["bases"][0]
    out.append(
        Check(
            "execute",
            "DLA-1.1",
            "T = 0 gives an empty output",
            _execute(ctx, Config(capacity=2, base=base), ("empty",), T=0),
        )
    )
    return out


# ------------------------------------------------------------------ end to end
def _e2e_margin(ctx: Context, config: Config, key: tuple) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("end_to_end", *key)
        inputs, margin = margin_inputs(rng, ctx.profile.shape, config, ctx.dtype, ctx.margin_bound)
        args, kw = split(inputs)
        expected, _ = ref.forward(*args, config, **kw)
        actual, _ = ctx.adapter.forward(*args, config, **kw)
        return compare(actual, expected, ctx.dtype).with_note(f"min margin {margin:.3g}")

    return run


def _e2e_dyadic(ctx: Context, config: Config, key: tuple) -> Callable[[], Comparison]:
    def run() -> Comparison:
        rng = ctx.rng("end_to_end", *key)
        inputs = random_inputs(rng, ctx.profile.shape, config, ctx.dtype)
        args, kw = split(inputs)
        expected, _ = ref.forward(*args, config, **kw)
        actual, _ = ctx.adapter.forward(*args, config, **kw)
        return compare(actual, expected, ctx.dtype)

    return run


def end_to_end_checks(ctx: Context) -> list[Check]:
    out: list[Check] = []
    T = ctx.profile.shape.T
    bound = ctx.margin_bound
    for rep in range(ctx.profile.repeats):
        for base in ctx.claims["bases"]:
            if "dla" in ctx.claims["policies"]:
                for C, tau in ((2, 0.5), (4, 1.0)):
                    cfg = Config(capacity=C, tau=tau, base=base)
                    out.append(
                        Check(
                            "end_to_end",
                            f"DLA-3.3, {BASE_CLAUSE[base]}",
                            f"dla key_cosine {base} C={C} tau={tau} margin>{bound:g} #{rep}",
                            _e2e_margin(ctx, cfg, ("kc", base, C, tau, rep)),
                        )
                    )
                cfg = Config(capacity=3, tau=0.5, score="external", base=base)
                out.append(
                    Check(
                        "end_to_end",
                        "DLA-3.4",
                        f"dla external dyadic {base} C=3 #{rep}",
                        _e2e_dyadic(ctx, cfg, ("dy", base, rep)),
                    )
                )
            if "fenwick" in ctx.claims["policies"]:
                cfg = fenwick_config(T, base=base)
                clause = "DLA-4.3" if base == "gla" else "DLA-4.1, DLA-5.2"
                out.append(
                    Check(
                        "end_to_end",
                        clause,
                        f"fenwick {base} C={cfg.capacity} #{rep}",
                        _e2e_dyadic(ctx, cfg, ("fw", base, rep)),
                    )
                )
    return out
