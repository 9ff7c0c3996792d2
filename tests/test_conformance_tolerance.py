"""The tolerance model (DLA-10): one wrong token or head cannot hide in an average."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import dla.reference as ref
from dla import Config
from dla.conformance.tolerance import (
    TOLERANCES,
    compare,
    compare_cache,
    compare_exact,
    compare_gradient,
    compare_plan,
)


def _output(seed: int = 0, B: int = 2, T: int = 256, H: int = 4, V: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, H, V)) * rng.uniform(0.1, 10.0, (B, 1, H, 1))


@pytest.mark.parametrize("dtype", sorted(TOLERANCES))
def test_exact_copy_passes_and_rounding_to_the_dtype_passes(dtype: str) -> None:
    r = _output()
    assert compare(r.copy(), r, dtype).passed and compare(r.copy(), r, dtype).ratio == 0.0
    if dtype != "bfloat16":
        assert compare(r.astype(dtype).astype(np.float64), r, dtype).passed


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_one_wrong_token_in_a_long_output_fails_and_is_located(dtype: str) -> None:
    r = _output(T=1024)
    o = r.copy()
    tol = TOLERANCES[dtype]
    # Small enough that the relative RMS over 2*1024*4 positions stays below its bound ...
    scale = max(np.abs(r[1, 200, 2]).max(), np.sqrt(np.mean(r[1, :, 2] ** 2)))
    bump = 2 * (tol.atol + tol.rtol * scale)
    o[1, 200, 2, 3] += bump
    rms = np.linalg.norm(o - r) / np.linalg.norm(r)
    assert rms < tol.rms
    # ... yet the per-position bound catches it, and says where.
    c = compare(o, r, dtype)
    assert not c.passed
    assert c.where == (1, 200, 2)
    assert c.error == pytest.approx(bump)
    assert c.error > c.bound and c.ratio == pytest.approx(2.0)


def test_one_wrong_head_fails_even_when_its_scale_is_small() -> None:
    r = _output()
    r[:, :, 3] *= 1e-3  # a quiet head: its errors are tiny next to the other heads
    o = r.copy()
    o[0, :, 3] *= 1.01  # 1 % wrong everywhere in head 3 of batch 0
    assert np.linalg.norm(o - r) / np.linalg.norm(r) < TOLERANCES["float32"].rms
    c = compare(o, r, "float32")
    assert not c.passed
    assert c.where is not None and (c.where[0], c.where[2]) == (0, 3)


def test_shape_mismatch_and_non_finite_fail() -> None:
    r = _output(T=4)
    assert not compare(r[:, :3], r, "float64").passed
    o = r.copy()
    o[0, 1, 0, 0] = np.nan
    c = compare(o, r, "float64")
    assert not c.passed and c.where == (0, 1, 0)


def test_unknown_dtype_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="dtype"):
        compare(_output(T=2), _output(T=2), "int8")


def _plan_and_cache():
    rng = np.random.default_rng(1)
    cfg = Config(capacity=3, tau=0.5, score="external")
    B, T, H, K, V = 2, 12, 2, 3, 3
    scores = rng.integers(0, 9, (B, T, H)) / 4.0
    args = [
        rng.standard_normal((B, T, H, K)),
        rng.standard_normal((B, T, H, K)),
        rng.standard_normal((B, T, H, V)),
        -rng.uniform(0, 1, (B, T, H)),
        rng.uniform(0, 1, (B, T, H, 3)),
    ]
    _, cache = ref.forward(*args, cfg, scores=scores, output_final_cache=True)
    return ref.make_plan(cfg, scores=scores), cache


def test_plan_comparison_is_exact_and_reports_the_first_difference() -> None:
    """DLA-10.4: a label one off fails; the earliest differing readout is reported."""
    plan, _ = _plan_and_cache()
    assert compare_plan(plan, dataclasses.replace(plan)).passed
    labels = plan.labels.copy()
    labels[1, 7, 0, 0] += 1
    labels[0, 9, 1, 0] += 1
    c = compare_plan(dataclasses.replace(plan, labels=labels), plan)
    assert not c.passed
    assert c.field == "plan.labels"
    assert c.where == (1, 7, 0, 0)  # earliest t first


def test_cache_integer_fields_exact_and_float_fields_by_tolerance() -> None:
    """DLA-10.4: ``position`` one off fails even in float32; DLA-10.2 for the float fields."""
    _, cache = _plan_and_cache()
    assert compare_cache(cache, cache, "float64").passed
    nudged = dataclasses.replace(cache, states=cache.states * (1 + 1e-12))
    assert compare_cache(nudged, cache, "float64").passed
    pos = dataclasses.replace(cache, position=cache.position + 1)
    c = compare_cache(pos, cache, "float32")
    assert not c.passed and c.field == "cache.position"
    info = cache.info.copy()
    info[1, 0, 0] += 1e-2
    c = compare_cache(dataclasses.replace(cache, info=info), cache, "float32")
    assert not c.passed and c.field == "cache.info"


def test_exact_comparison_counts_differences() -> None:
    a = np.arange(10)
    b = a.copy()
    b[[3, 7]] = -1
    c = compare_exact(b, a, "x")
    assert not c.passed and c.where == (3,) and c.error == 2


def test_gradient_comparison_by_relative_rms() -> None:
    """DLA-10.5: gradients pass iff ``||grad - fd|| / ||fd|| <= GRADIENT_RMS[dtype]``."""
    g = np.random.default_rng(2).standard_normal((4, 5))
    assert compare_gradient(g * (1 + 1e-8), g, "float64", "q").passed
    assert not compare_gradient(g * 1.01, g, "float64", "q").passed
    assert compare_gradient(g * (1 + 1e-4), g, "float32", "q").passed
    assert not compare_gradient(np.zeros_like(g), g, "float32", "q").passed


# ------------------------------------------------------------------ DLA-10.4 exact comparisons
@pytest.mark.parametrize("field", ["boundary", "count", "starts", "labels"])
def test_every_plan_field_is_compared_exactly(field: str) -> None:
    """DLA-10.4: one entry off by one (a flipped boundary) in any plan field fails."""
    plan, _ = _plan_and_cache()
    a = getattr(plan, field).copy()
    a[0, 11, 1, ...] = ~a[0, 11, 1] if field == "boundary" else a[0, 11, 1] + 1
    c = compare_plan(dataclasses.replace(plan, **{field: a}), plan)
    assert not c.passed and c.field == f"plan.{field}" and c.where[:3] == (0, 11, 1)


@pytest.mark.parametrize("dtype", sorted(TOLERANCES))
@pytest.mark.parametrize("field", ["starts", "labels", "count", "position"])
def test_integer_cache_fields_are_exact_in_every_dtype(field: str, dtype: str) -> None:
    """DLA-10.4: an integer cache field one off fails, even under the loosest tolerance."""
    _, cache = _plan_and_cache()
    a = getattr(cache, field).copy()
    a.flat[a.size - 1] += 1  # the last entry: one of many, so an average would hide it
    c = compare_cache(dataclasses.replace(cache, **{field: a}), cache, dtype)
    assert not c.passed and c.field == f"cache.{field}"
    assert compare_cache(cache, cache, dtype).passed


def test_golden_error_types_are_compared_exactly() -> None:
    """DLA-10.4: an implementation raising TypeError where a golden case expects ValueError
    fails exactly those cases (and still passes the cases that expect TypeError)."""
    from dla.conformance import certify
    from dla.conformance.golden import iter_cases

    class WrongErrorType:
        CLAIMS: ClassVar[dict] = dict(ref.CLAIMS)
        make_plan = staticmethod(ref.make_plan)

        @staticmethod
        def forward(*args, **kw):
            try:
                return ref.forward(*args, **kw)
            except ValueError as exc:
                raise TypeError(str(exc)) from None

    report = certify(WrongErrorType(), levels=["golden"], dtype="float64")
    failed = {r.check for r in report.results if not r.passed}
    expected = {f"invalid {c.name}" for c in iter_cases() if c.error == "ValueError"}
    assert expected and failed == expected
