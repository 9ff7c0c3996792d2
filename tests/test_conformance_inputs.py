"""Input generators: margins really exceed the bound, dyadic scores are exact, draws reproduce."""

from __future__ import annotations

import numpy as np
import pytest

import dla.reference as ref
from dla import Config
from dla.conformance.inputs import (
    Shape,
    cu_seqlens_for,
    designed_keys,
    dyadic_scores,
    margin_inputs,
    piece_lengths,
    quantize,
    random_inputs,
    rng_for,
)
from dla.conformance.tolerance import MARGIN_BOUND


@pytest.mark.parametrize("dtype", sorted(MARGIN_BOUND))
@pytest.mark.parametrize(
    ("C", "tau", "base"), [(1, 0.5, "gla"), (3, 0.5, "delta"), (4, 1.2, "gla")]
)
def test_margin_inputs_exceed_the_bound_of_their_dtype(
    dtype: str, C: int, tau: float, base: str
) -> None:
    cfg = Config(capacity=C, tau=tau, base=base)
    bound = MARGIN_BOUND[dtype]
    inputs, margin = margin_inputs(rng_for(0, dtype, C), Shape(2, 40, 2, 8, 4), cfg, dtype, bound)
    _, margins = ref.plan_with_margins(cfg, k=inputs["k"])
    assert margin == margins.minimum() > bound
    assert np.array_equal(quantize(inputs["k"], dtype), inputs["k"])  # representable in dtype
    plan = ref.make_plan(cfg, k=inputs["k"])
    if C > 1:  # the inputs exercise both decisions: boundaries and merges
        assert plan.boundary[:, 1:].any() and (~plan.boundary[:, 1:]).any()
        assert np.isfinite(margins.merge).any()


def test_designed_keys_keep_scores_away_from_tau() -> None:
    s = Shape(3, 50, 2, 6, 2)
    k = designed_keys(rng_for(1), s, tau=0.7, gap=0.05)
    iota = 1 - np.sum(k[:, 1:] * k[:, :-1], -1) / (
        np.linalg.norm(k[:, 1:], axis=-1) * np.linalg.norm(k[:, :-1], axis=-1)
    )
    assert np.all(np.abs(iota - 0.7) > 0.05 - 1e-9)
    assert (iota > 0.7).any() and (iota < 0.7).any()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dyadic_scores_are_exact_in_every_dtype(dtype: str) -> None:
    s = dyadic_scores(rng_for(2), (2, 64, 3))
    assert np.array_equal(quantize(s, dtype), s)
    assert s.min() >= 0 and s.max() <= 2 and len(np.unique(s)) <= 9  # few values: ties happen


def test_bfloat16_rounding_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).standard_normal(10_000) * 10.0 ** np.arange(-5, 5).repeat(1000)
    expected = torch.from_numpy(x).to(torch.bfloat16).double().numpy()
    np.testing.assert_array_equal(quantize(x, "bfloat16"), expected)


def test_random_inputs_are_quantized_and_in_domain() -> None:
    cfg = Config(capacity=3, base="delta", score="external")
    x = random_inputs(rng_for(4), Shape(2, 9, 2, 4, 3), cfg, "float16")
    for name, a in x.items():
        assert np.array_equal(quantize(a, "float16"), a), name
    assert (x["g"] <= 0).all() and (x["beta"] >= 0).all() and (x["beta"] <= 2).all()
    assert set(x) == {"q", "k", "v", "g", "lam", "beta", "scores"}


def test_piece_lengths_include_empty_and_single_pieces() -> None:
    for seed in range(20):
        lengths = piece_lengths(rng_for(seed), 30, 5)
        assert sum(lengths) == 30 and len(lengths) == 5
        assert 0 in lengths and 1 in lengths
    assert cu_seqlens_for([3, 0, 1]).tolist() == [0, 3, 3, 4]


def test_draws_are_a_function_of_seed_and_names() -> None:
    a = rng_for(0, "plan", 3).standard_normal(4)
    assert np.array_equal(a, rng_for(0, "plan", 3).standard_normal(4))
    assert not np.array_equal(a, rng_for(1, "plan", 3).standard_normal(4))
    assert not np.array_equal(a, rng_for(0, "plan", 4).standard_normal(4))
