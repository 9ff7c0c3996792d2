"""torch_cpu backward (torch autograd) and its certification (DLA-5, DLA-10, DLA-11.2).

Gradients of ``q, k, v, g, beta, lam`` are checked twice: by
``torch.autograd.gradcheck`` in float64 (the backward matches the
implementation's own forward) and against central finite differences of the
float64 *reference* with the plan frozen (the backward matches the spec), the
latter in float32 too with the tolerance of DLA-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import config, random_inputs

from dla import Plan
from dla.conformance import certify
from dla.conformance.tolerance import compare_gradient
from dla.impls import torch_cpu as tc
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan

CASES = [(b, p) for b in ("gla", "delta") for p in ("dla", "fenwick")]


def _grad_names(base: str) -> tuple[str, ...]:
    return ("q", "k", "v", "g", "lam") + (("beta",) if base == "delta" else ())


def _setup(base: str, policy: str, seed: int = 0):
    C = 4
    x = random_inputs(seed, 1, 7, 2, 2, 3, C, base=base, score="external")
    x["g"] = np.minimum(x["g"], -0.05)  # keep g <= 0 under finite-difference steps
    if base == "delta":
        x["beta"] = np.clip(x["beta"], 0.05, 0.95)
    cfg = config(C, tau=0.75, base=base, policy=policy, score="external")
    return x, cfg, ref_make_plan(cfg, scores=x["scores"])


def _torch_plan(p: Plan) -> Plan:
    return Plan(**{f: torch.from_numpy(getattr(p, f)) for f in ("boundary", "count", "starts",
                                                                  "labels")})


@pytest.mark.parametrize(("base", "policy"), CASES)
def test_gradcheck_float64(base, policy):
    x, cfg, plan = _setup(base, policy)
    names = _grad_names(base)
    fixed = {n: torch.from_numpy(a) for n, a in x.items() if n not in names}
    leaves = tuple(torch.from_numpy(x[n]).requires_grad_(True) for n in names)

    def f(*args):
        kw = dict(zip(names, args, strict=True))
        o, _ = tc.forward(**kw, **fixed, config=cfg, plan=_torch_plan(plan), chunk_size=3)
        return o

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def _reference_fd(x: dict, cfg, plan, weight: np.ndarray, name: str, h: float = 1e-6):
    """Central differences of ``sum(weight * o_ref)`` with respect to input ``name``."""
    grad = np.zeros_like(x[name])
    for idx in np.ndindex(*x[name].shape):
        vals = []
        for sgn in (1.0, -1.0):
            y = dict(x)
            y[name] = x[name].copy()
            y[name][idx] += sgn * h
            o, _ = ref_forward(**y, config=cfg, plan=plan)
            vals.append(float(np.sum(weight * o)))
        grad[idx] = (vals[0] - vals[1]) / (2 * h)
    return grad


@pytest.mark.parametrize(("base", "policy"), [("gla", "dla"), ("delta", "dla"), ("gla", "fenwick")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_reference_finite_differences(base, policy, dtype):
    x, cfg, plan = _setup(base, policy, seed=1)
    names = _grad_names(base)
    r, _ = ref_forward(**x, config=cfg, plan=plan)
    weight = np.random.default_rng(2).standard_normal(r.shape)
    leaves = {n: torch.tensor(x[n], dtype=dtype, requires_grad=True) for n in names}
    fixed = {n: torch.from_numpy(a).to(dtype) for n, a in x.items() if n not in names}
    o, _ = tc.forward(**leaves, **fixed, config=cfg, plan=_torch_plan(plan), chunk_size=4)
    (o * torch.from_numpy(weight).to(dtype)).sum().backward()
    label = str(dtype).removeprefix("torch.")
    for n in names:
        fd = _reference_fd(x, cfg, plan, weight, n)
        cmp = compare_gradient(leaves[n].grad.double().numpy(), fd, label, n)
        assert cmp.passed, cmp.message


def test_gradient_reaches_carried_states():
    """The carried cache's states are differentiable inputs too (DLA-7)."""
    x, cfg, _ = _setup("gla", "dla")
    t = {n: torch.from_numpy(a) for n, a in x.items()}
    head = {n: v[:, :3] for n, v in t.items()}
    tail = {n: v[:, 3:] for n, v in t.items()}
    _, cache = tc.forward(**head, config=cfg, output_final_cache=True)
    states = cache.states.clone().requires_grad_(True)
    cache = type(cache)(**{**cache.__dict__, "states": states})
    o, _ = tc.forward(**tail, config=cfg, initial_cache=cache)
    o.sum().backward()
    assert states.grad is not None and float(states.grad.abs().sum()) > 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_certified_by_the_conformance_suite(dtype):
    """DLA-11.2: every claimed level passes ``certify`` in the ci profile."""
    report = certify("torch_cpu", dtype=dtype, profile="ci")
    assert report.passed, sorted(report.failed_clauses())
    assert set(tc.CLAIMS["levels"]) <= set(report.levels)
