"""Inputs that enter the regimes of :mod:`dla.conformance.regimes` (spec DLA-12.11).

Each builder returns inputs quantized to the dtype under test (so the float64
reference sees exactly what the implementation sees) for one configuration:

- :func:`threshold_scores`: external scores equal to ``tau`` and one unit in
  the last place on either side of it, in the scores' dtype (DLA-3.8);
- :func:`repeated_keys`: power-of-two multiples and negations of one key per
  row, so every score is exactly 0, 1 or 2 and ties are real (DLA-2.6);
- :func:`extreme_norm_keys`: keys whose entries sit near the dtype's smallest
  normal or largest finite numbers (DLA-2.6);
- :func:`tie_scores`: float64 scores whose merges tie in the summation order
  of DLA-3.2 and not under prefix-sum differences (DLA-3.9).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import dla.reference as ref
from dla.config import Config
from dla.conformance.inputs import Shape, quantize, random_inputs

#: Significand bits (without the implicit one) of each dtype.
MANTISSA = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}
#: Powers of two that put key entries near each dtype's smallest normal and largest finite
#: numbers, while every entry stays a normal number (squares underflow or overflow there).
EXTREME_EXPONENTS = {"float64": (-900, 900), "float32": (-100, 100),
                     "bfloat16": (-100, 100), "float16": (-8, 10)}


def _representable(x: float, dtype: str) -> bool:
    return bool(quantize(np.array([x]), dtype)[0] == x) and math.isfinite(x)


def neighbours(tau: float, dtype: str) -> tuple[float, float]:
    """The largest value of ``dtype`` not above ``tau`` and the smallest one above it."""
    x = float(quantize(np.array([tau]), dtype)[0])
    e = math.floor(math.log2(abs(x))) if x != 0 else -30
    ulp = 2.0 ** (e - MANTISSA[dtype])
    cands = {float(c) for c in (x + d * ulp for d in (-2, -1, -0.5, 0, 0.5, 1, 2))
             if _representable(float(c), dtype)}
    down = max(c for c in cands if c <= tau)
    up = min(c for c in cands if c > tau)
    return down, up


def threshold_scores(rng: np.random.Generator, shape: tuple[int, int, int], tau: float,
                     dtype: str) -> np.ndarray:
    """Scores ``>= 0`` of ``dtype`` at ``tau``'s neighbours (and ``tau`` when representable),
    mixed with random ones: a boundary rule off by one unit in the last place, or compared
    after rounding ``tau`` to the scores' dtype, opens different states (DLA-3.8)."""
    down, up = neighbours(tau, dtype)
    near = [v for v in (down, up, float(quantize(np.array([tau]), dtype)[0])) if v >= 0]
    pick = rng.integers(0, len(near), size=shape)
    out = np.asarray(near)[pick]
    other = rng.random(shape) < 0.3
    out = np.where(other, quantize(rng.uniform(0.0, 2.0, shape), dtype), out)
    return quantize(np.maximum(out, 0.0), dtype)


def repeated_keys(rng: np.random.Generator, s: Shape, dtype: str) -> np.ndarray:
    """Per row one random key ``a``; token ``t`` gets ``+-2^j a`` (``j`` in -2..2) or, now and
    then, the zero key: every score is exactly 0 (same sign), 2 (opposite) or 1 (a zero key),
    in every dtype (DLA-2.1, DLA-2.2, DLA-2.6)."""
    a = quantize(rng.standard_normal((s.B, 1, s.H, s.K)), dtype)
    sign = np.where(rng.random((s.B, s.T, s.H, 1)) < 0.25, -1.0, 1.0)
    scale = 2.0 ** rng.integers(-2, 3, size=(s.B, s.T, s.H, 1))
    zero = rng.random((s.B, s.T, s.H, 1)) < 0.1
    return np.where(zero, 0.0, sign * scale * a)


def extreme_norm_keys(rng: np.random.Generator, keys: np.ndarray, dtype: str) -> np.ndarray:
    """``keys`` with each token scaled by ``2^lo``, ``2^hi`` or 1 (:data:`EXTREME_EXPONENTS`):
    the scores do not change (DLA-2.6), but squares of the entries underflow or overflow in
    ``dtype`` unless the implementation rescales first."""
    lo, hi = EXTREME_EXPONENTS[dtype]
    e = rng.choice([lo, hi, 0], size=(*keys.shape[:-1], 1), p=[0.4, 0.4, 0.2])
    return quantize(np.ldexp(keys, e), dtype)


# ----------------------------------------------------------------- summation order
def plan_with_prefix_sums(scores: np.ndarray, config: Config) -> np.ndarray:
    """The starts ``[R, T, C]`` of the ``dla`` policy (DLA-3) on score rows ``[R, T]`` when a
    state's information is taken as a difference of prefix sums, ``P[end] - P[start]``, instead
    of the running sum of DLA-3.2: equal in exact arithmetic, different in float64 bits."""
    R, T = scores.shape
    C = config.capacity
    out = np.full((R, T, C), -1, np.int64)
    for r in range(R):
        prefix = np.concatenate([[0.0], np.cumsum(scores[r])])
        starts: list[int] = []
        for t in range(T):
            if not starts or scores[r, t] > config.tau:
                starts.append(t)
            if len(starts) > C:
                ends = [*starts[1:], t + 1]
                info = [prefix[e] - prefix[a] for a, e in zip(starts, ends, strict=True)]
                cost = [info[i] + info[i + 1] for i in range(len(info) - 1)]
                m = int(np.argmin(cost))
                del starts[m + 1]
            out[r, t, : len(starts)] = starts
    return out


def tie_scores(rng: np.random.Generator, s: Shape, config: Config, tries: int = 60) -> np.ndarray:
    """Float64 external scores ``k / 10`` whose plan under DLA-3.2's running sums differs from
    the plan under prefix-sum differences, in every row where one of ``tries`` draws does (a
    kernel that sums another way then certifies only by luck). The candidates of all rows are
    planned by one reference call (rows are independent, DLA-1.1)."""
    R = s.B * s.H
    cand = rng.integers(0, 21, size=(R * tries, s.T)) / 10.0  # [rows * tries, T]
    mine = ref.make_plan(config, scores=cand.T[None, :, :]).starts[0].transpose(1, 0, 2)
    other = plan_with_prefix_sums(cand, config)
    differs = (mine != other).reshape(R * tries, -1).any(axis=1).reshape(R, tries)
    pick = np.where(differs.any(axis=1), differs.argmax(axis=1), 0)
    rows = cand.reshape(R, tries, s.T)[np.arange(R), pick]  # [R, T], rows as (b, h)
    return np.moveaxis(rows.reshape(s.B, s.H, s.T), 1, 2)


def with_scores(rng: np.random.Generator, s: Shape, config: Config, dtype: str,
                scores: np.ndarray, **kw: Any) -> dict[str, np.ndarray]:
    """The other inputs of a call whose external scores are ``scores`` (kept as they are)."""
    x = random_inputs(rng, s, config, dtype, **kw)
    x["scores"] = scores
    return x
