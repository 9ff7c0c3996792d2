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
