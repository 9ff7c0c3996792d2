"""The adapter: NumPy float64 in, the implementation's kind and dtype inside, NumPy out."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import dla.reference as ref
from dla import Cache, Config, Plan
from dla.conformance.adapter import Adapter

torch = pytest.importorskip("torch")


class _Recorder:
    """A torch 'implementation' that records what it was given and returns it unchanged."""

    CLAIMS: ClassVar[dict] = {"array": "torch", "dtypes": ("float32",), "levels": ("plan",)}

    def __init__(self) -> None:
        self.seen: dict = {}

    def forward(self, q, k, v, g, lam, config, **kw):
        self.seen = {"q": q, "k": k, "v": v, "g": g, "lam": lam, **kw}
        return v[..., :1].expand(*v.shape[:3], 2) * 1.0, kw.get("initial_cache")

    def make_plan(self, config, **kw):
        self.seen = kw
        return kw["plan_out"]


def _plan_and_cache() -> tuple[Plan, Cache]:
    rng = np.random.default_rng(0)
    cfg = Config(capacity=3, tau=0.5)
    B, T, H, K, V = 2, 7, 2, 3, 4
    args = [
        rng.standard_normal((B, T, H, K)),
        rng.standard_normal((B, T, H, K)),
        rng.standard_normal((B, T, H, V)),
        -rng.uniform(0, 1, (B, T, H)),
        rng.uniform(0, 1, (B, T, H, 3)),
    ]
    _, cache = ref.forward(*args, cfg, output_final_cache=True)
    assert cache is not None
    return ref.make_plan(cfg, k=args[1]), cache


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_round_trip_of_plan_and_cache(dtype: str) -> None:
    plan, cache = _plan_and_cache()
    ad = Adapter(_Recorder(), dtype=dtype)
    p_t = ad.plan_to_impl(plan)
    assert p_t.boundary.dtype == torch.bool and p_t.starts.dtype == torch.int64
    assert ad.plan_to_numpy(p_t).equals(plan)
    c_t = ad.cache_to_impl(cache)
    expected_float = torch.float32 if dtype in ("float16", "bfloat16") else getattr(torch, dtype)
    assert c_t.states.dtype == expected_float and c_t.info.dtype == expected_float
    assert c_t.count.dtype == torch.int64 and c_t.position.dtype == torch.int64
    back = ad.cache_to_numpy(c_t)
    assert back.states.dtype == np.float64 and back.count.dtype == np.int64
    for f in ("starts", "labels", "count", "position"):
        np.testing.assert_array_equal(getattr(back, f), getattr(cache, f))
    rtol = 1e-15 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(back.states, cache.states, rtol=rtol, atol=rtol)


def test_forward_converts_inputs_and_outputs() -> None:
    plan, cache = _plan_and_cache()
    impl = _Recorder()
    ad = Adapter(impl, dtype="float32")
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 7, 2, 3))
    o, c = ad.forward(
        q,
        q,
        rng.standard_normal((2, 7, 2, 4)),
        -np.ones((2, 7, 2)),
        np.ones((2, 7, 2, 3)),
        Config(capacity=3),
        plan=plan,
        initial_cache=cache,
        output_final_cache=True,
        cu_seqlens=np.array([0, 7]),
    )
    assert impl.seen["q"].dtype == torch.float32 and impl.seen["q"].device.type == "cpu"
    assert impl.seen["cu_seqlens"].dtype == torch.int64
    assert isinstance(impl.seen["plan"].count, torch.Tensor)
    assert isinstance(o, np.ndarray) and o.dtype == np.float64 and o.shape == (2, 7, 2, 2)
    assert isinstance(c, Cache) and isinstance(c.states, np.ndarray)


def test_make_plan_returns_numpy_and_rejects_a_non_plan() -> None:
    plan, _ = _plan_and_cache()
    ad = Adapter(_Recorder(), dtype="float32")
    out = ad.make_plan(Config(capacity=3), plan_out=ad.plan_to_impl(plan))
    assert isinstance(out.count, np.ndarray) and out.equals(plan)
    with pytest.raises(TypeError, match=r"not dla\.Plan"):
        ad.make_plan(Config(capacity=3), plan_out=dataclasses.asdict(plan))


def test_numpy_implementation_stays_numpy_and_keeps_the_dtype() -> None:
    ad = Adapter("reference", dtype="float32")
    x = np.linspace(0, 1, 5)
    assert ad.to_impl(x).dtype == np.float32 and isinstance(ad.to_impl(x), np.ndarray)
    with pytest.raises(ValueError, match="dtype"):
        Adapter("reference", dtype="bfloat16")
    with pytest.raises(ValueError, match="device"):
        Adapter("reference", device="cuda")


def test_int32_cu_seqlens_when_claimed() -> None:
    class _Int32(_Recorder):
        CLAIMS: ClassVar[dict] = {**_Recorder.CLAIMS, "cu_seqlens_dtype": "int32"}

    ad = Adapter(_Int32())
    assert ad.cu_to_impl(np.array([0, 3, 5])).dtype == torch.int32


class _ReturnsNumpy(_Recorder):
    """Claims torch tensors, returns a NumPy output (DLA-11.1 violated)."""

    def forward(self, q, k, v, g, lam, config, **kw):
        return v[..., :1].expand(*v.shape[:3], 2).numpy(), None


class _CacheUnasked(_Recorder):
    def forward(self, q, k, v, g, lam, config, **kw):
        return v * 1.0, kw.get("initial_cache")


class _IntegerOutput(_Recorder):
    def forward(self, q, k, v, g, lam, config, **kw):
        return v.to(torch.int64), None


@pytest.mark.parametrize(("impl", "match"), [
    (_ReturnsNumpy(), "claims array 'torch' but returned numpy"),
    (_CacheUnasked(), "returned a cache although output_final_cache=False"),
    (_IntegerOutput(), "o: the implementation returned int64"),
])
def test_returned_kind_dtype_and_cache_are_checked_against_the_claims(impl, match) -> None:
    """DLA-11.1, DLA-1.6: what comes back is of the claimed array kind, floating, and a cache
    only when one was asked for."""
    _, cache = _plan_and_cache()
    ad = Adapter(impl, dtype="float32")
    x = np.ones((2, 7, 2, 3))
    with pytest.raises(TypeError, match=match):
        ad.forward(x, x, np.ones((2, 7, 2, 4)), -np.ones((2, 7, 2)), x, Config(capacity=3),
                   initial_cache=cache)
