"""``dla.impls.triton_gpu`` at the edges of what its kernels represent (DLA-1.3, DLA-11.2).

float16 keeps the range of its inputs, not of its intermediates: states and
``q . k`` products above 65504 must not overflow. Sizes the kernels cannot
address are refused by name rather than computed wrongly. Kernels run under
Triton's interpreter without CUDA (``conftest.py``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import dla
from dla.conformance.tolerance import compare
from dla.impls.triton_gpu import api
from dla.reference import forward as ref_forward


def _run_fp16(x: dict, cfg: dla.Config, device: str):
    t = {n: torch.tensor(a, device=device).to(torch.float16 if n in ("q", "k", "v")
                                                 else torch.float32) for n, a in x.items()}
    want, _ = ref_forward(**x, config=cfg)
    got, _ = api.forward(**t, config=cfg)
    return compare(got.float().cpu().numpy(), want, "float16")


def test_float16_states_above_its_range_stay_finite(device):
    """DLA-1.3: a state entry reaches 131072 (float16 max 65504) while outputs stay small."""
    B, T, H, K, C = 1, 512, 1, 16, 2
    scores = np.zeros((B, T, H))  # one boundary (token 0): a single growing state
    x = {"q": np.full((B, T, H, K), 1e-3), "k": np.full((B, T, H, K), 16.0),
         "v": np.full((B, T, H, K), 16.0), "g": np.zeros((B, T, H)),
         "lam": np.ones((B, T, H, C)), "scores": scores}
    cmp = _run_fp16(x, dla.Config(capacity=C, tau=0.5, score="external"), device)
    assert cmp.passed, cmp.message


def test_float16_query_key_products_above_its_range_stay_finite(device):
    """DLA-1.3: ``q . k = 65536`` before the scale; the output (about 524) is representable."""
    B, T, H, K, C = 1, 64, 1, 64, 1
    x = {"q": np.full((B, T, H, K), 32.0), "k": np.full((B, T, H, K), 32.0),
         "v": np.full((B, T, H, 16), 1e-3), "g": np.zeros((B, T, H)),
         "lam": np.ones((B, T, H, C))}
    cmp = _run_fp16(x, dla.Config(capacity=C, tau=0.5), device)
    assert cmp.passed, cmp.message


def _small(device: str, K: int = 8, T: int = 8) -> dict:
    rng = np.random.default_rng(3)
    x = {"q": rng.standard_normal((1, T, 1, K)), "k": rng.standard_normal((1, T, 1, K)),
         "v": rng.standard_normal((1, T, 1, K)), "g": -rng.uniform(0, 0.2, (1, T, 1)),
         "lam": rng.uniform(0.5, 1.5, (1, T, 1, 2))}
    return {n: torch.tensor(a, dtype=torch.float32, device=device) for n, a in x.items()}


@pytest.mark.parametrize("chunk", [8, 48, 256, 64.0, True])
def test_unsupported_chunk_is_refused_by_name(chunk, device):
    """DLA-11.2: the chunk is a kernel tile: a power of two from 16 to 128."""
    with pytest.raises(ValueError, match=r"^chunk: .*DLA-11\.2"):
        api.forward(**_small(device), config=dla.Config(capacity=2), chunk=chunk)


def test_head_dimension_beyond_the_tiles_is_refused_by_name(device):
    """DLA-11.2: head dimensions above 256 do not fit the kernels' tiles."""
    with pytest.raises(ValueError, match=r"^q: last dimension 512 .*DLA-11\.2"):
        api.forward(**_small(device, K=512, T=2), config=dla.Config(capacity=2))


def test_positions_beyond_the_kernels_are_refused_by_name(device):
    """DLA-11.2: positions are int32 with 2**30 as the kernels' "no slot" mark."""
    x = _small(device)
    cfg = dla.Config(capacity=2)
    _, cache = api.forward(**{n: a[:, :4] for n, a in x.items()}, config=cfg,
                           output_final_cache=True)
    assert cache is not None
    rest = {n: a[:, 4:] for n, a in x.items()}
    near = dataclasses.replace(cache, position=torch.full_like(cache.position, 2**30 - 4))
    api.forward(**rest, config=cfg, initial_cache=near)  # last position 2**30 - 1: accepted
    far = dataclasses.replace(cache, position=torch.full_like(cache.position, 2**30 - 3))
    with pytest.raises(ValueError, match=r"^initial_cache\.position: .*DLA-11\.2"):
        api.forward(**rest, config=cfg, initial_cache=far)


def test_an_injected_plan_is_executed_without_a_scan(device, monkeypatch):
    """DLA-6.2: with a plan given, the forward runs no planner (the backward relies on it)."""
    x = _small(device)
    cfg = dla.Config(capacity=2)
    plan = api.make_plan(cfg, k=x["k"])
    want, want_cache = api.forward(**x, config=cfg, output_final_cache=True)

    def no_scan(*args, **kwargs):
        raise AssertionError("the planner ran although a plan was injected")

    monkeypatch.setattr(api, "_device_plan", no_scan)
    got, got_cache = api.forward(**x, config=cfg, plan=plan, output_final_cache=True)
    assert torch.equal(got, want)
    assert got_cache is not None and want_cache is not None
    # the same sums; the scan adds in token order, the plan path by prefix sums (DLA-6.2)
    torch.testing.assert_close(got_cache.info, want_cache.info, rtol=1e-12, atol=0)
