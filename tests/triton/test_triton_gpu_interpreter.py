"""``dla.impls.triton_gpu`` against ``dla.reference`` on small shapes (DLA-3 to DLA-8).

Without CUDA the kernels run under Triton's interpreter (see ``conftest.py``),
so these tests certify the very kernels the GPU runs. Shapes stay small (T <= 64,
K = V <= 16, H <= 2). ``chunk=16`` makes every sequence span several chunks, so
the state pass carries and merges states across chunk boundaries, which the
conformance engine's short sequences (one chunk of 64) would not reach.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dla
from dla.conformance import certify
from dla.conformance.tolerance import compare, compare_cache, compare_plan
from dla.impls.triton_gpu import api
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan

CHUNK = 16


def _inputs(seed: int, B: int, T: int, H: int, K: int, C: int, *, external: bool = False):
    rng = np.random.default_rng(seed)
    x = {
        "q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
        "v": rng.standard_normal((B, T, H, K)), "g": -rng.uniform(0.0, 0.2, (B, T, H)),
        "lam": rng.uniform(0.2, 1.5, (B, T, H, C)),
    }
    if external:  # dyadic scores: exact in float32, so ties are real (DLA-10.3)
        x["scores"] = rng.integers(0, 8, (B, T, H)) / 4.0
    return x


def _torch(x: dict, device: str, dtype=torch.float32) -> dict:
    return {n: torch.tensor(a, dtype=dtype, device=device) for n, a in x.items()}


def _config(policy: str, C: int, *, external: bool = False, tau: float = 0.9) -> dla.Config:
    return dla.Config(capacity=C, tau=tau, policy=policy,
                      score="external" if external else "key_cosine")


CASES = [("dla", 3, True), ("dla", 4, False), ("fenwick", 7, False)]


@pytest.mark.parametrize(("policy", "C", "external"), CASES)
def test_plan_equals_reference(policy, C, external, device):
    """DLA-6.2: the device plan equals the reference plan exactly (dyadic ties included)."""
    x = _inputs(1, 2, 64, 2, 8, C, external=external)
    cfg = _config(policy, C, external=external, tau=0.75 if external else 0.9)
    src = {"scores": x["scores"]} if external else {"k": x["k"]}
    want = ref_make_plan(cfg, **src)
    got = api.make_plan(cfg, **_torch(src, device), chunk=CHUNK)
    cmp = compare_plan(got, want)
    assert cmp.passed, cmp.message


@pytest.mark.parametrize(("policy", "C", "external"), CASES)
def test_execute_injected_plan_over_chunks(policy, C, external, device):
    """DLA-5.3, DLA-6.2: with the reference plan injected, outputs match across 4 chunks."""
    x = _inputs(2, 2, 64, 2, 16, C, external=external)
    cfg = _config(policy, C, external=external)
    plan = ref_make_plan(cfg, **({"scores": x["scores"]} if external else {"k": x["k"]}))
    want, _ = ref_forward(**x, config=cfg)
    t = _torch(x, device)
    tplan = dla.Plan(*(torch.as_tensor(getattr(plan, f)).to(device)
                       for f in ("boundary", "count", "starts", "labels")))
    got, _ = api.forward(**t, config=cfg, plan=tplan, chunk=CHUNK)
    cmp = compare(got.cpu().numpy(), want, "float32")
    assert cmp.passed, cmp.message


def test_full_power_of_two_capacity_over_chunks(device):
    """DLA-3.3, DLA-3.4: C = 16 (the kernels' slot tile exactly) with every token opening a
    state, so chunk ends hold 16 states and the newest slot, the last of the tile, takes
    the chunk's tokens; the reference plan injected and the own plan."""
    C = 16
    x = _inputs(21, 1, 64, 2, 8, C, external=True)
    cfg = _config("dla", C, external=True, tau=-1.0)
    want, _ = ref_forward(**x, config=cfg)
    t = _torch(x, device)
    got, _ = api.forward(**t, config=cfg, chunk=CHUNK)
    cmp = compare(got.cpu().numpy(), want, "float32")
    assert cmp.passed, cmp.message


@pytest.mark.parametrize(("policy", "C", "external"), CASES)
def test_streaming_pieces_equal_one_pass(policy, C, external, device):
    """DLA-7.2: prefill (37 tokens, a partial chunk) then the rest == one pass, cache included."""
    x = _inputs(3, 1, 64, 2, 8, C, external=external)
    cfg = _config(policy, C, external=external)
    want, want_cache = ref_forward(**x, config=cfg, output_final_cache=True)
    t = _torch(x, device)
    first = {n: a[:, :37] for n, a in t.items()}
    rest = {n: a[:, 37:] for n, a in t.items()}
    o1, c1 = api.forward(**first, config=cfg, output_final_cache=True, chunk=CHUNK)
    o2, c2 = api.forward(**rest, config=cfg, initial_cache=c1, output_final_cache=True,
                         chunk=CHUNK)
    cmp = compare(torch.cat([o1, o2], 1).cpu().numpy(), want, "float32")
    assert cmp.passed, cmp.message
    cc = compare_cache(c2, want_cache, "float32")
    assert cc.passed, cc.message


def test_varlen_with_cache_and_empty_sequence(device):
    """DLA-8.1: packed sequences (one empty) from carried caches == separate reference calls."""
    C = 3
    cfg = _config("dla", C)
    x = _inputs(4, 1, 60, 2, 8, C)
    pre = _inputs(5, 3, 10, 2, 8, C)
    _, cache = ref_forward(**pre, config=cfg, output_final_cache=True)
    cu = np.array([0, 25, 25, 60])
    want, want_cache = ref_forward(**x, config=cfg, initial_cache=cache, cu_seqlens=cu,
                                   output_final_cache=True)
    tcache = dla.Cache(*(torch.as_tensor(np.asarray(getattr(cache, f))).to(device)
                         for f in dla.cache.CACHE_FIELDS))
    got, got_cache = api.forward(**_torch(x, device), config=cfg, initial_cache=tcache,
                                 cu_seqlens=torch.tensor(cu, device=device),
                                 output_final_cache=True, chunk=CHUNK)
    cmp = compare(got.cpu().numpy(), want, "float32")
    assert cmp.passed, cmp.message
    cc = compare_cache(got_cache, want_cache, "float32")
    assert cc.passed, cc.message


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_end_to_end(dtype, device):
    """DLA-1.3: 16-bit inputs, float32 accumulation, within the dtype's tolerance."""
    C = 4
    cfg = _config("dla", C, external=True)
    x = _inputs(6, 1, 64, 2, 16, C, external=True)
    t = {n: torch.tensor(a, device=device).to(dtype if n in ("q", "k", "v") else torch.float32)
         for n, a in x.items()}
    x16 = {n: a.float().cpu().numpy().astype(np.float64) for n, a in t.items()}
    want, _ = ref_forward(**x16, config=cfg)
    got, _ = api.forward(**t, config=cfg, chunk=CHUNK)
    assert got.dtype == dtype
    cmp = compare(got.float().cpu().numpy(), want, str(dtype).removeprefix("torch."))
    assert cmp.passed, cmp.message


def test_delta_base_is_refused_by_name(device):
    """DLA-11.2: the delta base is not implemented here, and the error says so."""
    C = 2
    x = _torch(_inputs(7, 1, 8, 1, 8, C), device)
    x["beta"] = torch.ones(1, 8, 1, device=device)
    with pytest.raises(ValueError, match=r"^config\.base: .*DLA-11\.2"):
        api.forward(**x, config=dla.Config(capacity=C, base="delta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_repeated_and_opposite_keys_score_exactly(dtype, device):
    """DLA-2.1: identical (or power-of-two multiple) keys score exactly 0, opposite keys 2.

    At ``tau = 0`` a repeated key must not open a state; an ulp of rounding in
    the cosine would open one.
    """
    rng = np.random.default_rng(11)
    base = rng.standard_normal((1, 1, 2, 16))
    k = np.concatenate([base, base, 2.0 * base, -base, -0.5 * base, base], axis=1)
    k = np.repeat(k, 5, axis=1)  # T = 30, runs of equal keys
    kt = torch.tensor(k, dtype=dtype, device=device)
    k_ref = kt.float().cpu().numpy().astype(np.float64)
    cfg = dla.Config(capacity=4, tau=0.0)
    got = api.make_plan(cfg, k=kt, chunk=CHUNK)
    want = ref_make_plan(cfg, k=k_ref)
    cmp = compare_plan(got, want)
    assert cmp.passed, cmp.message


def test_float64_inputs_are_refused_not_cast(device):
    """DLA-9.3: the kernels compute in float32 at most, so float64 inputs raise TypeError."""
    x = _torch(_inputs(9, 1, 8, 1, 8, 2), device, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^q: .*float64.*DLA-9\.3"):
        api.forward(**x, config=dla.Config(capacity=2))


def test_numpy_arrays_are_refused_by_name(device):
    """DLA-9.3: arguments of another array kind get a TypeError naming them."""
    x = _torch(_inputs(10, 1, 8, 1, 8, 2), device)
    x["k"] = x["k"].cpu().numpy()
    with pytest.raises(TypeError, match=r"^k: .*torch"):
        api.forward(**x, config=dla.Config(capacity=2))
    with pytest.raises(TypeError, match=r"^k: .*torch"):
        api.make_plan(dla.Config(capacity=2), k=x["k"])


def test_injected_plan_that_splits_a_carried_state_is_refused(device):
    """DLA-6.4, DLA-9.10: an injected plan must coarsen from the carried cache."""
    C = 3
    x = _inputs(12, 1, 12, 1, 8, C, external=True)
    cfg = _config("dla", C, external=True, tau=-1.0)  # one state per token
    head = {n: a[:, :6] for n, a in x.items()}
    tail = {n: a[:, 6:] for n, a in x.items()}
    _, cache = ref_forward(**head, config=cfg, output_final_cache=True)
    plan = ref_make_plan(cfg, scores=tail["scores"], initial_cache=cache)
    starts = plan.starts.copy()
    starts[0, 0, 0, :C] = [0, 4, 6]  # the carried states start at 0, 3, 5: 4 is not one of them
    bad = dla.Plan(boundary=plan.boundary, count=plan.count, starts=starts, labels=plan.labels)
    with pytest.raises(ValueError, match=r"^plan"):
        api.forward(**_torch(tail, device), config=cfg, plan=bad,
                    initial_cache=_torch_cache(cache, device), chunk=CHUNK)


def _torch_cache(cache: dla.Cache, device: str) -> dla.Cache:
    def t(a):
        return torch.tensor(a, device=device,
                            dtype=torch.float32 if a.dtype.kind == "f" else torch.int64)

    return dla.Cache(**{f: t(getattr(cache, f)) for f in dla.cache.CACHE_FIELDS})


def test_bad_input_uses_shared_validation(device):
    """DLA-9.5: ``g > 0`` raises the shared validation's ValueError naming ``g``."""
    x = _torch(_inputs(8, 1, 8, 1, 8, 2), device)
    x["g"] = x["g"].abs() + 0.1
    with pytest.raises(ValueError, match=r"^g:"):
        api.forward(**x, config=dla.Config(capacity=2))


def test_certified_by_the_conformance_engine(device):
    """DLA-10, DLA-11: the claimed levels pass ``dla.conformance.certify`` in float32."""
    levels = ("plan", "execute", "end_to_end", "streaming", "varlen")
    report = certify("triton_gpu", levels=levels, dtype="float32", device=device)
    failed = [f"{r.level} {r.clause} {r.check}: {r.detail}" for r in report.results
              if not r.passed]
    assert report.passed, "\n".join(failed)


def test_the_always_run_levels_pass(device):
    """DLA-12.8 to DLA-12.10: properties, claims (delta and float64 refused as DLA-9.14 asks) and
    robustness (canaries, layouts, untouched arguments, determinism, decode chains, fuzzed
    calls) pass for the Triton kernels too, under the interpreter in CI and on CUDA."""
    report = certify("triton_gpu", levels=["properties", "claims", "robustness"],
                     dtype="float32", device=device)
    failed = [f"{r.level} {r.clause} {r.check}: {r.detail}" for r in report.results
              if not r.passed]
    assert report.passed, "\n".join(failed)
    probes = {r.check: r.status for r in report.results if r.level == "claims"}
    assert probes["unclaimed base 'delta': forward"] == "not_supported"
    assert probes["unclaimed dtype float64: forward"] == "not_supported"
    assert any("decode chain" in r.check for r in report.results)
