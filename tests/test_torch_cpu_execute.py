"""torch_cpu execution against the float64 reference (DLA-5, DLA-6.2, DLA-7, DLA-8, DLA-10).

Outputs and caches are compared with the tolerance model of
``dla.conformance.tolerance`` (DLA-10.2); integer cache fields exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import config, random_inputs
from hypothesis import given
from hypothesis import strategies as st

from dla import Cache, Plan
from dla.conformance.tolerance import compare, compare_cache
from dla.impls import torch_cpu as tc
from dla.reference import forward as ref_forward
from dla.reference import make_plan as ref_make_plan

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CACHE_FIELDS = ("states", "info", "starts", "labels", "count", "prev_key", "position")


def _t(x, dtype=None):
    if x is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def _torch_inputs(x: dict, dtype: torch.dtype) -> dict:
    """Float inputs in ``dtype``; external scores stay as given (they are dyadic, so exact)."""
    return {n: _t(a, dtype) for n, a in x.items()}


def _exact_inputs(x: dict, dtype: torch.dtype) -> dict:
    """The NumPy inputs rounded to ``dtype``, so the reference sees what the implementation sees."""
    return {n: _t(a, dtype).double().numpy() for n, a in x.items()}


def _torch_cache(c: Cache, dtype=None) -> Cache:
    return Cache(**{f: _t(getattr(c, f), dtype) for f in CACHE_FIELDS})


def _torch_plan(p: Plan) -> Plan:
    return Plan(**{f: _t(getattr(p, f)) for f in ("boundary", "count", "starts", "labels")})


def _assert_close(o, r, dtype: str):
    cmp = compare(o.detach().double().numpy() if isinstance(o, torch.Tensor) else o, r, dtype)
    assert cmp.passed, cmp.message


CASES = [(b, p) for b in ("gla", "delta") for p in ("dla", "fenwick")]


@pytest.mark.parametrize(("base", "policy"), CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_execute_with_injected_plan(base, policy, dtype, chunk_size):
    """DLA-6.2: the reference plan injected; outputs within the tolerance of ``dtype``."""
    C = 6
    x = _exact_inputs(random_inputs(1, 2, 29, 3, 4, 5, C, base=base), DTYPES[dtype])
    cfg = config(C, tau=0.7, base=base, policy=policy)
    plan = ref_make_plan(cfg, k=x["k"])
    r, _ = ref_forward(**x, config=cfg, plan=plan)
    o, cache = tc.forward(**_torch_inputs(x, DTYPES[dtype]), config=cfg, plan=_torch_plan(plan),
                          chunk_size=chunk_size)
    assert cache is None and o.dtype == DTYPES[dtype] and o.shape == r.shape
    _assert_close(o, r, dtype)


def test_injected_plan_is_executed_not_recomputed():
    """DLA-6.2: a different (valid) plan changes the output exactly as in the reference."""
    C = 3
    x = random_inputs(2, 1, 12, 1, 3, 2, C, score="external")
    cfg = config(C, tau=0.5, score="external")
    other = ref_make_plan(config(C, tau=10.0, score="external"), scores=x["scores"])
    r, _ = ref_forward(**x, config=cfg, plan=other)
    o, _ = tc.forward(**_torch_inputs(x, torch.float64), config=cfg, plan=_torch_plan(other))
    _assert_close(o, r, "float64")
    own, _ = ref_forward(**x, config=cfg)
    assert not np.allclose(r, own)


@given(seed=st.integers(0, 10_000), T=st.integers(1, 40), C=st.integers(1, 5),
       base=st.sampled_from(["gla", "delta"]), policy=st.sampled_from(["dla", "fenwick"]),
       score=st.sampled_from(["key_cosine", "external"]), L=st.sampled_from([1, 4, 16]))
def test_end_to_end_float64(seed, T, C, base, policy, score, L):
    if policy == "fenwick":
        C = max(C, int(T - 1).bit_length() + 1)
    x = random_inputs(seed, 2, T, 2, 3, 4, C, base=base, score=score)
    cfg = config(C, tau=0.8, base=base, policy=policy, score=score)
    r, rc = ref_forward(**x, config=cfg, output_final_cache=True)
    o, c = tc.forward(**_torch_inputs(x, torch.float64), config=cfg, output_final_cache=True,
                      chunk_size=L)
    _assert_close(o, r, "float64")
    cmp = compare_cache(c, rc, "float64")
    assert cmp.passed, cmp.message


@pytest.mark.parametrize(("base", "policy"), CASES)
def test_end_to_end_float32_dyadic_scores(base, policy):
    """Float32 end to end: dyadic external scores make every decision exact (DLA-10.3)."""
    C = 6
    x = _exact_inputs(random_inputs(4, 2, 32, 2, 8, 8, C, base=base, score="external"),
                      torch.float32)
    cfg = config(C, tau=0.75, base=base, policy=policy, score="external")
    r, rc = ref_forward(**x, config=cfg, output_final_cache=True)
    o, c = tc.forward(**_torch_inputs(x, torch.float32), config=cfg, output_final_cache=True)
    _assert_close(o, r, "float32")
    cmp = compare_cache(c, rc, "float32")
    assert cmp.passed, cmp.message


def test_masked_form_and_single_state_reduction():
    """DLA-5.4: the chunked executor agrees with the reference's masked form (here at C = 1)."""
    x = random_inputs(6, 1, 33, 2, 4, 3, 1)
    cfg = config(1, tau=0.3)
    m, _ = ref_forward(**x, config=cfg, masked=True)
    o, _ = tc.forward(**_torch_inputs(x, torch.float64), config=cfg, chunk_size=8)
    _assert_close(o, m, "float64")


@pytest.mark.parametrize(("base", "policy"), CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_streaming_pieces_equal_one_pass(base, policy, dtype):
    """DLA-7.2: prefill + decode with torch caches equals one pass, outputs and final cache."""
    C, T = 6, 31
    x = _exact_inputs(random_inputs(7, 2, T, 2, 4, 3, C, base=base, score="external"),
                      DTYPES[dtype])
    cfg = config(C, tau=0.75, base=base, policy=policy, score="external")
    r, rc = ref_forward(**x, config=cfg, output_final_cache=True)
    cache, outs = None, []
    for a, b in ((0, 13), (13, 13), (13, 14), (14, 22), (22, 31)):
        piece = _torch_inputs({n: v[:, a:b] for n, v in x.items()}, DTYPES[dtype])
        o, cache = tc.forward(**piece, config=cfg, initial_cache=cache, output_final_cache=True,
                              chunk_size=4)
        outs.append(o)
    _assert_close(torch.cat(outs, 1), r, dtype)
    cmp = compare_cache(cache, rc, dtype)
    assert cmp.passed, cmp.message


@pytest.mark.parametrize("base", ["gla", "delta"])
def test_cache_crosses_implementations(base):
    """DLA-7.2: reference cache -> torch_cpu, and torch_cpu cache -> reference."""
    C, T1 = 5, 17
    x = random_inputs(9, 1, 40, 2, 4, 3, C, base=base)
    cfg = config(C, tau=0.9, base=base)
    r, _ = ref_forward(**x, config=cfg)
    head = {n: v[:, :T1] for n, v in x.items()}
    tail = {n: v[:, T1:] for n, v in x.items()}
    _, rc = ref_forward(**head, config=cfg, output_final_cache=True)
    o2, _ = tc.forward(**_torch_inputs(tail, torch.float64), config=cfg,
                       initial_cache=_torch_cache(rc))
    _assert_close(o2, r[:, T1:], "float64")
    _, tcache = tc.forward(**_torch_inputs(head, torch.float64), config=cfg,
                           output_final_cache=True)
    o3, _ = ref_forward(**tail, config=cfg, initial_cache=tcache.to_numpy())
    _assert_close(o3, r[:, T1:], "float64")


@pytest.mark.parametrize(("base", "policy"), CASES)
def test_varlen_equals_separate_calls(base, policy):
    """DLA-8.1: packed sequences, each fresh or from its row of ``initial_cache``."""
    C = 6
    lengths = [5, 0, 12, 9]
    cu = np.cumsum([0, *lengths])
    x = random_inputs(10, 1, int(cu[-1]), 2, 3, 4, C, base=base)
    cfg = config(C, tau=0.8, base=base, policy=policy)
    pre = random_inputs(11, len(lengths), 3, 2, 3, 4, C, base=base)
    _, rc = ref_forward(**pre, config=cfg, output_final_cache=True)
    for cache in (None, rc):
        r, rcf = ref_forward(**x, config=cfg, cu_seqlens=cu, initial_cache=cache,
                             output_final_cache=True)
        o, c = tc.forward(**_torch_inputs(x, torch.float64), config=cfg, cu_seqlens=_t(cu),
                          initial_cache=None if cache is None else _torch_cache(cache),
                          output_final_cache=True, chunk_size=4)
        _assert_close(o, r, "float64")
        cmp = compare_cache(c, rcf, "float64")
        assert cmp.passed, cmp.message


def test_empty_sequence_returns_the_carried_cache():
    C = 4
    x = random_inputs(12, 1, 6, 2, 3, 2, C)
    cfg = config(C, tau=0.5)
    _, c = tc.forward(**_torch_inputs(x, torch.float64), config=cfg, output_final_cache=True)
    empty = {n: v[:, :0] for n, v in x.items()}
    o, c2 = tc.forward(**_torch_inputs(empty, torch.float64), config=cfg, initial_cache=c,
                       output_final_cache=True)
    assert o.shape == (1, 0, 2, 2)
    for f in CACHE_FIELDS:
        assert torch.equal(getattr(c, f), getattr(c2, f)), f


@pytest.mark.parametrize(("bad", "match"), [
    ({"chunk_size": 0}, "chunk_size"),
    ({"g": "positive"}, "g: log decay"),
    ({"dtype": torch.float16}, r"q: dtype float16 is not in CLAIMS\['dtypes'\].*DLA-9.3"),
    ({"dtype": torch.bfloat16}, r"q: dtype bfloat16 is not in CLAIMS\['dtypes'\].*DLA-9.3"),
    ({"lam": "short"}, "lam: last dimension"),
])
def test_bad_input_is_rejected_with_a_named_error(bad, match):
    """DLA-9: the shared validation, plus the implementation's own dtype and chunk rules."""
    x = _torch_inputs(random_inputs(13, 1, 5, 1, 2, 2, 3), torch.float64)
    kw = {}
    if "chunk_size" in bad:
        kw["chunk_size"] = bad["chunk_size"]
    if bad.get("g") == "positive":
        x["g"] = x["g"].abs() + 0.1
    if bad.get("lam") == "short":
        x["lam"] = x["lam"][..., :2]
    if "dtype" in bad:
        x = {n: v.to(bad["dtype"]) for n, v in x.items()}
    with pytest.raises((ValueError, TypeError), match=match):
        tc.forward(**x, config=config(3), **kw)


def test_make_plan_refuses_the_dtypes_forward_refuses():
    """DLA-9.14, DLA-11.6: make_plan and forward accept the same claimed dtypes (a 16-bit key
    was planned but not executed before)."""
    x = _torch_inputs(random_inputs(13, 1, 5, 1, 2, 2, 3), torch.float64)
    with pytest.raises(TypeError, match="k: dtype bfloat16"):
        tc.make_plan(config(3), k=x["k"].to(torch.bfloat16))


@pytest.mark.parametrize("name", ["q", "k", "lam", "scores"])
def test_numpy_arguments_are_refused_by_name(name):
    """DLA-9.3: an argument of another array kind is a TypeError naming it, not a crash."""
    x = _torch_inputs(random_inputs(7, 1, 8, 1, 4, 3, 2, score="external"), torch.float64)
    x[name] = x[name].numpy()
    cfg = config(2, score="external")
    with pytest.raises(TypeError, match=rf"^{name}: .*torch.*DLA-9\.3"):
        tc.forward(**x, config=cfg)
    if name == "scores":
        with pytest.raises(TypeError, match=r"^scores: .*torch.*DLA-9\.3"):
            tc.make_plan(cfg, scores=x["scores"])
