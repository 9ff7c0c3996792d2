"""triton_gpu on a CUDA GPU: long multi-chunk bf16 sequences (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dla
from dla.conformance.tolerance import compare, compare_plan
from dla.impls.triton_gpu import api
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(("policy", "C"), [("dla", 8), ("fenwick", 10)])
def test_long_sequence_bf16(policy, C):
    """DLA-5.4, DLA-6.2: T = 300 (5 chunks of 64, the last partial) in bf16 vs the reference."""
    rng = np.random.default_rng(0)
    B, T, H, K = 2, 300, 2, 64
    x = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, H, K)), "g": -rng.uniform(0, 0.1, (B, T, H)),
         "lam": rng.uniform(0.2, 1.5, (B, T, H, C)), "scores": rng.integers(0, 8, (B, T, H)) / 4}
    cfg = dla.Config(capacity=C, tau=0.75, policy=policy, score="external")
    t = {n: torch.tensor(a, device="cuda", dtype=torch.float32) for n, a in x.items()}
    for n in ("q", "k", "v"):
        t[n] = t[n].to(torch.bfloat16)
    x16 = {n: a.float().cpu().numpy().astype(np.float64) for n, a in t.items()}
    cmp_plan = compare_plan(api.make_plan(cfg, scores=t["scores"]),
                            ref_make_plan(cfg, scores=x16["scores"]))
    assert cmp_plan.passed, cmp_plan.message
    want, _ = ref_forward(**x16, config=cfg)
    got, _ = api.forward(**t, config=cfg)
    cmp = compare(got.float().cpu().numpy(), want, "bfloat16")
    assert cmp.passed, cmp.message


@pytest.mark.parametrize(("policy", "C", "D"), [("dla", 16, 64), ("fenwick", 10, 128)])
def test_long_sequence_bf16_gradients(policy, C, D):
    """DLA-10.5: T = 300 (5 chunks of 64, the last partial), bf16 q, k, v: the Triton
    backward within half the bf16 gradient bound of torch_cpu's float32 autograd on the
    same values (plan frozen, the same plan injected in both)."""
    import dla.impls.triton_gpu as triton_gpu
    from dla.conformance.tolerance import GRADIENT_RMS
    from dla.impls.torch_cpu import api as torch_api

    rng = np.random.default_rng(1)
    B, T, H = 2, 300, 2
    x = {"q": rng.standard_normal((B, T, H, D)), "k": rng.standard_normal((B, T, H, D)),
         "v": rng.standard_normal((B, T, H, D)), "g": -rng.uniform(0, 0.1, (B, T, H)),
         "lam": rng.uniform(0.2, 1.5, (B, T, H, C))}
    cfg = dla.Config(capacity=C, tau=0.5, policy=policy)
    t = {n: torch.tensor(a, device="cuda", dtype=torch.float32) for n, a in x.items()}
    for n in ("q", "k", "v"):
        t[n] = t[n].to(torch.bfloat16)
    plan = api.make_plan(cfg, k=t["k"])
    R = torch.randn(B, T, H, D, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ours = {n: a.clone().requires_grad_() for n, a in t.items()}
    o, _ = triton_gpu.forward(**ours, config=cfg, plan=plan)
    (o.float() * R).sum().backward()
    ref = {n: a.detach().float().requires_grad_() for n, a in t.items()}
    o32, _ = torch_api.forward(**ref, config=cfg, plan=plan)
    (o32 * R).sum().backward()
    for n in ref:
        rel = float((ours[n].grad.float() - ref[n].grad).norm() / ref[n].grad.norm())
        assert rel < GRADIENT_RMS["bfloat16"] / 2, (n, rel)
