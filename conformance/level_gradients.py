"""The ``gradients`` level: backward of a torch implementation, plan frozen.

For a random projection ``L = sum(o * R)`` the implementation's autograd
gradients with respect to ``q, k, v, g, lam`` (and ``beta`` for the delta
base) are compared, by relative RMS (``tolerance.GRADIENT_RMS``), with
central finite differences of the float64 reference, the reference plan
injected in both (DLA-6.2), so the discrete decisions do not move. Shapes
are small: finite differences cost two reference calls per input entry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import dla.reference as ref
from dla.config import Config
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import fenwick_config, quantize, random_inputs
from dla.conformance.level_numeric import BASE_CLAUSE, split
from dla.conformance.tolerance import GRADIENT_RMS, Comparison, compare_gradient
from dla.plan import Plan

LEVEL = "gradients"


def _inputs(ctx: Context, rng: np.random.Generator, config: Config) -> dict[str, np.ndarray]:
    """Inputs away from the domain edges, so a finite-difference step stays valid (DLA-1.4)."""
    s = ctx.profile.grad_shape
    inputs = random_inputs(rng, s, config, ctx.dtype)
    inputs["g"] = quantize(-rng.uniform(0.05, 0.5, inputs["g"].shape), ctx.dtype)
    if "beta" in inputs:
        inputs["beta"] = quantize(rng.uniform(0.1, 1.4, inputs["beta"].shape), ctx.dtype)
    return inputs


def finite_differences(
    config: Config,
    inputs: dict[str, np.ndarray],
    plan: Plan,
    R: np.ndarray,
    names: tuple[str, ...],
    eps: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Central differences of ``sum(reference(o) * R)`` with ``plan`` frozen."""

    def loss(x: dict[str, np.ndarray]) -> float:
        args, kw = split(x)
        return float(np.sum(ref.forward(*args, config, plan=plan, **kw)[0] * R))

    grads = {}
    for name in names:
        base = inputs[name]
        grad = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            h = eps * max(1.0, abs(base[idx]))
            plus, minus = base.copy(), base.copy()
            plus[idx] += h
            minus[idx] -= h
            grad[idx] = (loss({**inputs, name: plus}) - loss({**inputs, name: minus})) / (2 * h)
        grads[name] = grad
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


def _gradient_check(ctx: Context, config: Config, key: tuple) -> Callable[[], list[Comparison]]:
    def run() -> list[Comparison]:
        rng = ctx.rng(LEVEL, *key)
        inputs = _inputs(ctx, rng, config)
        args, kw = split(inputs)
        plan = ref.make_plan(config, k=inputs["k"], scores=kw.get("scores"))
        o, _ = ref.forward(*args, config, plan=plan, **kw)
        R = rng.standard_normal(o.shape)
        names = ("q", "k", "v", "g", "lam") + (("beta",) if config.base == "delta" else ())
        expected = finite_differences(config, inputs, plan, R, names)
        actual = implementation_gradients(ctx, config, inputs, plan, R, names)
        return [compare_gradient(actual[n], expected[n], ctx.dtype, n) for n in names]

    return run


def _unsupported(message: str) -> Callable[[], Comparison]:
    return lambda: Comparison(False, "gradients", message=message)


def checks(ctx: Context) -> list[Check]:
    if ctx.claims["array"] != "torch":
        return [
            Check(
                LEVEL,
                "DLA-11.2",
                "gradients need a torch implementation",
                _unsupported(
                    f"array {ctx.claims['array']!r} has no autograd; "
                    "the gradients level needs array 'torch'"
                ),
            )
        ]
    if ctx.dtype not in GRADIENT_RMS:
        return [
            Check(
                LEVEL,
                "DLA-10.1",
                f"gradients in {ctx.dtype}",
                _unsupported(
                    f"no gradient tolerance for {ctx.dtype}; "
                    f"certify gradients in {sorted(GRADIENT_RMS)}"
                ),
            )
        ]
    out: list[Check] = []
    T = ctx.profile.grad_shape.T
    for rep in range(ctx.profile.repeats):
        for base in ctx.claims["bases"]:
            if "dla" in ctx.claims["policies"]:
                cfg = Config(capacity=3, tau=0.5, base=base)
                out.append(
                    Check(
                        LEVEL,
                        f"DLA-10.5, {BASE_CLAUSE[base]}",
                        f"dla {base} C=3 backward vs finite differences #{rep}",
                        _gradient_check(ctx, cfg, ("dla", base, rep)),
                    )
                )
            if "fenwick" in ctx.claims["policies"]:
                cfg = fenwick_config(T, base=base)
                out.append(
                    Check(
                        LEVEL,
                        f"DLA-10.5, {BASE_CLAUSE[base]}",
                        f"fenwick {base} backward vs finite differences #{rep}",
                        _gradient_check(ctx, cfg, ("fw", base, rep)),
                    )
                )
    return out
