"""The ``gradients`` level: backward of a torch implementation, plan frozen.

For a random projection ``L = sum(o * R)`` the implementation's autograd
gradients with respect to ``q, k, v, g, lam`` (and ``beta`` for the delta
base) are compared, by relative RMS (``tolerance.GRADIENT_RMS``), with
central finite differences of the float64 reference, the reference plan
injected in both (DLA-6.2), so the discrete decisions do not move. Finite
differences take two evaluations per input entry, stacked along the batch axis
into a few reference calls (rows are independent, DLA-1.1), so shapes stay
small. Across chunks (``T`` of a few chunk lengths), directional differences
along one random direction per block of 64 readouts and input replace the
per-entry ones: a gradient wrong in one chunk, e.g. a dropped inter-chunk
state, cannot average out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import dla.reference as ref
from dla.config import BASES, Config
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import Shape, quantize, random_inputs
from dla.conformance.level_numeric import BASE_CLAUSE, split
from dla.conformance.tolerance import GRADIENT_RMS, Comparison, compare_gradient
from dla.plan import PLAN_FIELDS, Plan

LEVEL = "gradients"


def _inputs(ctx: Context, rng: np.random.Generator, config: Config,
            s: Shape) -> dict[str, np.ndarray]:
    """Inputs away from the domain edges, so a finite-difference step stays valid (DLA-1.4)."""
    inputs = random_inputs(rng, s, config, ctx.dtype)
    inputs["g"] = quantize(-rng.uniform(0.05, 0.5, inputs["g"].shape), ctx.dtype)
    if "beta" in inputs:
        inputs["beta"] = quantize(rng.uniform(0.1, 1.4, inputs["beta"].shape), ctx.dtype)
    return inputs


def batched_losses(config: Config, plan: Plan, R: np.ndarray,
                   variants: list[dict[str, np.ndarray]], group: int = 256) -> np.ndarray:
    """``sum(reference(o) * R)`` for each variant of the inputs, ``plan`` frozen.

    Rows are independent (DLA-1.1), so the variants are stacked along the
    batch axis and evaluated by a few reference calls instead of one call each.
    """
    out = []
    for i in range(0, len(variants), group):
        chunk = variants[i : i + group]
        n = len(chunk)
        stacked = {name: np.concatenate([v[name] for v in chunk]) for name in chunk[0]}
        tiled = Plan(**{f: np.concatenate([getattr(plan, f)] * n) for f in PLAN_FIELDS})
        args, kw = split(stacked)
        o = ref.forward(*args, config, plan=tiled, **kw)[0]
        prod = o * np.concatenate([R] * n)
        out.append(prod.reshape(n, -1).sum(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def finite_differences(
    config: Config,
    inputs: dict[str, np.ndarray],
    plan: Plan,
    R: np.ndarray,
    names: tuple[str, ...],
    eps: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Central differences of ``sum(reference(o) * R)`` with ``plan`` frozen, per entry."""
    variants, steps, where = [], [], []
    for name in names:
        base = inputs[name]
        for idx in np.ndindex(base.shape):
            h = eps * max(1.0, abs(base[idx]))
            for sign in (1.0, -1.0):
                x = base.copy()
                x[idx] += sign * h
                variants.append({**inputs, name: x})
            steps.append(h)
            where.append((name, idx))
    losses = batched_losses(config, plan, R, variants).reshape(-1, 2)
    grads = {name: np.zeros_like(inputs[name]) for name in names}
    for (name, idx), h, (plus, minus) in zip(where, steps, losses, strict=True):
        grads[name][idx] = (plus - minus) / (2 * h)
    return grads


def implementation_gradients(
    ctx: Context,
    config: Config,
    inputs: dict[str, np.ndarray],
    plan: Plan,
    R: np.ndarray,
    names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Autograd gradients of ``sum(o * R)`` through the implementation, ``plan`` injected."""
    import torch

    ad = ctx.adapter
    leaves = {n: ad.to_impl(x).detach().requires_grad_(n in names) for n, x in inputs.items()}
    args = [leaves[n] for n in ("q", "k", "v", "g", "lam")]
    kw = {n: leaves[n] for n in ("beta", "scores") if n in leaves}
    o, _ = ad.impl.forward(*args, config, plan=ad.plan_to_impl(plan), **kw)
    loss = (o.to(torch.float64) * torch.as_tensor(R, dtype=torch.float64, device=o.device)).sum()
    loss.backward()
    out = {}
    for n in names:
        g = leaves[n].grad
        out[n] = np.zeros_like(inputs[n]) if g is None else ad.to_numpy(g)
    return out


@dataclass
class _Problem:
    """One gradient comparison: inputs, the frozen plan, the cotangent ``R`` of ``o``, and the
    differentiable inputs (DLA-10.5, DLA-10.7)."""

    rng: np.random.Generator
    inputs: dict[str, np.ndarray]
    plan: Plan
    R: np.ndarray
    names: tuple[str, ...]


def _problem(ctx: Context, config: Config, key: tuple, s: Shape) -> _Problem:
    rng = ctx.rng(LEVEL, *key)
    inputs = _inputs(ctx, rng, config, s)
    args, kw = split(inputs)
    plan = ref.make_plan(config, k=inputs["k"], scores=kw.get("scores"))
    o, _ = ref.forward(*args, config, plan=plan, **kw)
    names = ("q", "k", "v", "g", "lam") + (("beta",) if config.base == "delta" else ())
    return _Problem(rng, inputs, plan, rng.standard_normal(o.shape), names)


def _gradient_check(ctx: Context, config: Config, key: tuple,
                    s: Shape) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        p = _problem(ctx, config, key, s)
        inputs, plan, R, names = p.inputs, p.plan, p.R, p.names
        expected = finite_differences(config, inputs, plan, R, names)
        actual = implementation_gradients(ctx, config, inputs, plan, R, names)
        return [compare_gradient(actual[n], expected[n], ctx.dtype, n) for n in names]

    return run


def directional_differences(
    config: Config, inputs: dict[str, np.ndarray], plan: Plan, R: np.ndarray,
    directions: dict[str, list[np.ndarray]], eps: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Central differences of ``sum(reference(o) * R)`` along each direction, plan frozen."""
    variants, order = [], []
    for name, ds in directions.items():
        base = inputs[name]
        h = eps * max(1.0, float(np.max(np.abs(base))))
        for d in ds:
            variants += [{**inputs, name: base + h * d}, {**inputs, name: base - h * d}]
            order.append((name, h))
    losses = batched_losses(config, plan, R, variants).reshape(-1, 2)
    out: dict[str, list[float]] = {name: [] for name in directions}
    for (name, h), (plus, minus) in zip(order, losses, strict=True):
        out[name].append((plus - minus) / (2 * h))
    return {name: np.array(v) for name, v in out.items()}


def _block_directions(rng: np.random.Generator, x: np.ndarray, block: int) -> list[np.ndarray]:
    """One random direction per block of ``block`` readouts (axis 1), zero elsewhere: a wrong
    gradient confined to one chunk (a dropped inter-chunk state) cannot average out."""
    T = x.shape[1]
    out = []
    for a in range(0, T, block):
        d = np.zeros_like(x)
        d[:, a : a + block] = rng.standard_normal(d[:, a : a + block].shape)
        out.append(d)
    return out


def _long_gradient_check(ctx: Context, config: Config, key: tuple,
                         s: Shape) -> Callable[[], list[Comparison]]:
    """DLA-10.5 across chunks: directional derivatives per block of 64 readouts over a
    sequence of several chunks, so backward through the carried inter-chunk states counts."""

    def run() -> list[Comparison]:
        p = _problem(ctx, config, key, s)
        inputs, plan, R, names = p.inputs, p.plan, p.R, p.names
        dirs = {n: _block_directions(p.rng, inputs[n], CHUNK_REGIME) for n in names}
        expected = directional_differences(config, inputs, plan, R, dirs)
        grads = implementation_gradients(ctx, config, inputs, plan, R, names)
        out = []
        for n in names:
            actual = np.array([float(np.sum(grads[n] * d)) for d in dirs[n]])
            out.append(compare_gradient(actual, expected[n], ctx.dtype, n).noted(
                f"T = {s.T}, directions per block of {CHUNK_REGIME} readouts"))
        return out

    return run


#: Readouts per block of the long gradient check (a common chunk size, DLA-10.5).
CHUNK_REGIME = 64


def _unsupported(message: str) -> Callable[[], Comparison]:
    return lambda: Comparison(False, "gradients", message=message)


def checks(ctx: Context) -> list[Check]:
    if ctx.claims.array != "torch":
        return [ctx.check(LEVEL, "DLA-11.2", "gradients need a torch implementation",
                          _unsupported(f"array {ctx.claims.array!r} has no autograd; "
                                       "the gradients level needs array 'torch'"))]
    if ctx.dtype not in GRADIENT_RMS:
        return [ctx.check(LEVEL, "DLA-10.1", f"gradients in {ctx.dtype}",
                          _unsupported(f"no gradient tolerance for {ctx.dtype}; "
                                       f"certify gradients in {sorted(GRADIENT_RMS)}"))]
    out: list[Check] = []
    small = ctx.fit_shape(ctx.profile.grad_shape)
    long = ctx.fit_shape(ctx.profile.long_grad_shape)
    for rep in range(ctx.profile.repeats):
        for base in BASES:
            cfg = Config(capacity=ctx.capacity(3), tau=0.5, base=base)
            out.append(ctx.check(LEVEL, f"DLA-10.5, {BASE_CLAUSE[base]}",
                                 f"dla {base} C={cfg.capacity} backward vs finite differences "
                                 f"#{rep}", _gradient_check(ctx, cfg, ("dla", base, rep), small),
                                 config=cfg, shape=small, regime="small"))
            cfg_f, T = ctx.fenwick(small.T, base=base)
            s = dataclasses.replace(small, T=T)
            out.append(ctx.check(LEVEL, f"DLA-10.5, {BASE_CLAUSE[base]}",
                                 f"fenwick {base} backward vs finite differences #{rep}",
                                 _gradient_check(ctx, cfg_f, ("fw", base, rep), s),
                                 config=cfg_f, shape=s, regime="small"))
            for policy in ("dla", "fenwick"):
                if policy == "dla":
                    cfg, T = Config(capacity=ctx.capacity(4), tau=0.5, base=base), long.T
                else:
                    cfg, T = ctx.fenwick(long.T, base=base)
                s = dataclasses.replace(long, T=T)
                out.append(ctx.check(
                    LEVEL, f"DLA-10.5, {BASE_CLAUSE[base]}",
                    f"{policy} {base} backward across chunks (T = {T}) #{rep}",
                    _long_gradient_check(ctx, cfg, ("long", policy, base, rep), s),
                    config=cfg, shape=s, regime="gradients_across_chunks"))
    return out
