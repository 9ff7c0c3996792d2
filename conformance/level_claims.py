"""The ``claims`` level (DLA-12.9): the claims checked in the other direction.

Every other level runs inside the implementation's claims (DLA-11.2). This
level steps outside them on purpose, once per unclaimed value (as PyTorch's
OpInfo ``test_dtypes`` does for dtypes): a dtype, base, policy, score
source, capacity or size the implementation does not claim, and the
streaming, varlen and foreign-plan features when they are not claimed. Each
probe is one valid call of the spec; the outcome is

- *not supported*: refused in the form of DLA-11.2 (``ValueError``, or
  ``TypeError`` for a dtype, naming the argument and citing the clause);
- *works, not claimed*: the right answer (reported, not a failure);
- a failure: a wrong answer, or any other exception (a crash is not a refusal).

It runs once per claimed device, with the device's first claimed dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import dla.reference as ref
from dla.claims import DTYPES, SIZE_NAMES
from dla.config import BASES, POLICIES, SCORES, Config
from dla.conformance.adapter import Adapter
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import Shape, fenwick_config, random_inputs
from dla.conformance.tolerance import Comparison, compare, compare_cache, compare_plan
from dla.reference.policies import fenwick_capacity

LEVEL = "claims"
#: Largest size a probe asks for (a limit above it is not probed: too costly to build).
_PROBE_LIMIT = {"B": 64, "T": 4096, "H": 64, "K": 512, "V": 512, "C": 64}


def _claimed_config(ctx: Context, **changes: Any) -> Config:
    """A configuration inside the claims (the first claimed base, policy and score)."""
    c = ctx.claims
    fields = {"base": c.bases[0], "policy": c.policies[0], "score": c.scores[0], **changes}
    if fields["policy"] == "fenwick":
        T = ctx.fit_shape(_SHAPE).T
        return fenwick_config(T, base=fields["base"], score=fields["score"])
    C = fields.pop("capacity", ctx.capacity(3))
    return Config(capacity=C, tau=0.5, **fields)


_SHAPE = Shape(B=1, T=12, H=2, K=8, V=8)


def _probe_call(adapter: Adapter, config: Config, s: Shape, seed: tuple[Any, ...],
                **kw: Any) -> Callable[[], list[Comparison]]:
    """One forward call (and the plan, when it is asked for) against the reference."""

    def run() -> list[Comparison]:
        from dla.conformance.inputs import rng_for

        x = random_inputs(rng_for(0, *seed), s, config, adapter.dtype)
        args = [x[n] for n in ("q", "k", "v", "g", "lam")]
        fkw = {n: x[n] for n in ("beta", "scores") if n in x}
        o_exp, c_exp = ref.forward(*args, config, **fkw, **kw)
        o, c = adapter.forward(*args, config, **fkw, **kw)
        comps = [compare(o, o_exp, adapter.dtype)]
        if c_exp is not None and c is not None:
            comps.append(compare_cache(c, c_exp, adapter.dtype))
        return comps

    return run


def _probe_plan(adapter: Adapter, config: Config, s: Shape,
                seed: tuple[Any, ...]) -> Callable[[], Comparison]:
    def run() -> Comparison:
        from dla.conformance.inputs import rng_for

        x = random_inputs(rng_for(0, *seed), s, config, adapter.dtype)
        kw = {"scores": x["scores"]} if config.score == "external" else {"k": x["k"]}
        return compare_plan(adapter.make_plan(config, **kw), ref.make_plan(config, **kw))

    return run


def _probe(ctx: Context, clause: str, name: str, run: Callable[[], Any],
           config: Config | None = None, shape: Shape | None = None,
           features: tuple[str, ...] = ()) -> Check:
    cites = f"{clause}, DLA-9.14, DLA-11.6"
    return ctx.check(LEVEL, cites, name, run, config=config, shape=shape, features=features,
                     probe=True)


def _dtype_probes(ctx: Context, s: Shape) -> list[Check]:
    out = []
    config = _claimed_config(ctx)
    for dt in DTYPES:
        if dt in ctx.claims.dtypes_on(ctx.device):
            continue
        try:
            adapter = Adapter(ctx.adapter.loaded, dt, ctx.device)
        except ValueError:  # e.g. bfloat16 has no NumPy dtype: nothing to probe
            continue
        out.append(_probe(ctx, "DLA-9.3, DLA-11.2", f"unclaimed dtype {dt}: forward",
                          _probe_call(adapter, config, s, ("dtype", dt)), config, s))
        out.append(_probe(ctx, "DLA-9.3, DLA-11.2", f"unclaimed dtype {dt}: make_plan",
                          _probe_plan(adapter, config, s, ("dtype-plan", dt)), config, s))
    return out


def _config_probes(ctx: Context, s: Shape) -> list[Check]:
    out = []
    c = ctx.claims
    for field, values, claimed in (("base", BASES, c.bases), ("policy", POLICIES, c.policies),
                                   ("score", SCORES, c.scores)):
        for value in values:
            if value in claimed:
                continue
            config = _claimed_config(ctx, **{field: value})
            out.append(_probe(ctx, "DLA-11.2", f"unclaimed {field} {value!r}: forward",
                              _probe_call(ctx.adapter, config, s, (field, value)), config, s))
            if field != "base":  # plans do not depend on the base
                out.append(_probe(ctx, "DLA-11.2", f"unclaimed {field} {value!r}: make_plan",
                                  _probe_plan(ctx.adapter, config, s, (field, value, "plan")),
                                  config, s))
    return out


def _outside(rule: Any, name: str, near: int) -> int | None:
    """A value of size ``name`` the rule does not allow, close to the claimed ones."""
    floor = 0 if name == "T" else 1
    candidates = []
    if rule.max is not None:
        candidates.append(rule.max + 1)
    if rule.min > floor:
        candidates.append(rule.min - 1)
    if rule.multiple_of > 1 or rule.power_of_two:
        candidates.extend(near + d for d in (1, -1, 3))
    for n in candidates:
        if floor <= n <= _PROBE_LIMIT[name] and not rule.allows(n):
            return n
    return None


def _size_probes(ctx: Context, s: Shape) -> list[Check]:
    out = []
    for name in SIZE_NAMES:
        rule = ctx.claims.sizes.get(name)
        if rule is None:
            continue
        value = _outside(rule, name, getattr(s, name) if name != "C" else ctx.capacity(3))
        if value is None:
            continue
        if name == "C":
            if "dla" not in ctx.claims.policies:
                continue  # fenwick fixes its capacity by T; a capacity probe needs dla
            config = _claimed_config(ctx, policy="dla", capacity=value)
            shape = s
        else:
            shape = dataclasses.replace(s, **{name: value})
            config = _claimed_config(ctx)
            if config.policy == "fenwick":
                config = fenwick_config(max(shape.T, 1), base=config.base, score=config.score)
        label = "capacity" if name == "C" else name
        out.append(_probe(ctx, "DLA-11.2", f"unclaimed {label} = {value}: forward",
                          _probe_call(ctx.adapter, config, shape, ("size", name, value)),
                          config, shape))
    return out


def _feature_probes(ctx: Context, s: Shape) -> list[Check]:
    out = []
    config = _claimed_config(ctx)
    if "streaming" not in ctx.claims.levels:
        def continued() -> list[Comparison]:
            from dla.conformance.inputs import rng_for

            x = random_inputs(rng_for(0, "stream-probe"), s, config, ctx.dtype)
            P = s.T // 2
            pre = {n: a[:, :P] for n, a in x.items()}
            post = {n: a[:, P:] for n, a in x.items()}
            kw_pre = {n: pre[n] for n in ("beta", "scores") if n in pre}
            kw_post = {n: post[n] for n in ("beta", "scores") if n in post}
            args = [pre[n] for n in ("q", "k", "v", "g", "lam")]
            _, cache = ref.forward(*args, config, output_final_cache=True, **kw_pre)
            cache = ctx.quantize_cache(cache)  # type: ignore[arg-type]
            args = [post[n] for n in ("q", "k", "v", "g", "lam")]
            o_exp, c_exp = ref.forward(*args, config, initial_cache=cache,
                                       output_final_cache=True, **kw_post)
            o, c = ctx.adapter.forward(*args, config, initial_cache=cache,
                                       output_final_cache=True, **kw_post)
            comps = [compare(o, o_exp, ctx.dtype)]
            if c is not None and c_exp is not None:
                comps.append(compare_cache(c, c_exp, ctx.dtype))
            return comps

        out.append(_probe(ctx, "DLA-7.2, DLA-11.2", "unclaimed streaming: initial_cache",
                          continued, config, s, ("streaming",)))
    if "varlen" not in ctx.claims.levels:
        cu = np.array([0, 3, 3, s.T], np.int64)
        packed = dataclasses.replace(s, B=1)
        out.append(_probe(ctx, "DLA-8.1, DLA-11.2", "unclaimed varlen: cu_seqlens",
                          _probe_call(ctx.adapter, config, packed, ("varlen",), cu_seqlens=cu),
                          config, packed, ("varlen",)))
    if ctx.claims.plans != "any":
        out.append(_probe(ctx, "DLA-6.2, DLA-11.2", "unclaimed foreign plan",
                          _foreign_plan(ctx, config, s), config, s, ("foreign_plan",)))
    rule_t = ctx.claims.size_rule("T")
    if rule_t.min > 0:
        empty = dataclasses.replace(s, T=0)
        out.append(_probe(ctx, "DLA-1.1, DLA-11.2", "unclaimed T = 0",
                          _probe_call(ctx.adapter, config, empty, ("empty",)), config, empty))
    return out


def _foreign_plan(ctx: Context, config: Config, s: Shape) -> Callable[[], Comparison]:
    """A plan the implementation's own scores would not make (DLA-6.2)."""

    def run() -> Comparison:
        from dla.conformance.inputs import dyadic_scores, rng_for

        rng = rng_for(0, "foreign-probe")
        x = random_inputs(rng, s, config, ctx.dtype)
        C = config.capacity if config.policy == "dla" else max(config.capacity,
                                                               fenwick_capacity(s.T))
        other = Config(capacity=C, tau=0.5, score="external")
        plan = ref.make_plan(other, scores=dyadic_scores(rng, (s.B, s.T, s.H)))
        args = [x[n] for n in ("q", "k", "v", "g", "lam")]
        kw = {n: x[n] for n in ("beta", "scores") if n in x}
        expected, _ = ref.forward(*args, config, plan=plan, **kw)
        actual, _ = ctx.adapter.forward(*args, config, plan=plan, **kw)
        return compare(actual, expected, ctx.dtype)

    return run


def claims_checks(ctx: Context) -> list[Check]:
    """The probes of one device (run with the device's first claimed dtype)."""
    claimed = ctx.claims.dtypes_on(ctx.device)
    if not claimed or ctx.dtype != claimed[0]:
        return []
    s = ctx.fit_shape(_SHAPE)
    return (_dtype_probes(ctx, s) + _config_probes(ctx, s) + _size_probes(ctx, s)
            + _feature_probes(ctx, s))
