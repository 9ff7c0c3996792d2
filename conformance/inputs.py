"""Input generators of the conformance suite (deterministic given a seed).

Every float input is *quantized* to the dtype under test (rounded there and
back to float64), so the float64 reference sees exactly the values the
implementation sees, and the only error left is the implementation's own
(DLA-10). Plan-sensitive inputs come in two kinds (DLA-10.3): key-cosine
inputs whose smallest decision margin (DLA-6.3) exceeds a stated bound, and
external scores on a dyadic grid, exact in every dtype, so ties are real and
the tie-break rule of DLA-3.4 is tested exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from dla.reference.api import plan_with_margins
from dla.reference.policies import fenwick_capacity

from dla.config import Config


def rng_for(seed: int, *keys: Any) -> np.random.Generator:
    """A generator determined by ``seed`` and the names of a check (stable across runs)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _bfloat16_round(x: np.ndarray) -> np.ndarray:
    """Round float64 to the nearest bfloat16 (ties to even), returned as float64."""
    f = np.asarray(x, np.float64).astype(np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    bias = ((bits >> 16) & 1) + 0x7FFF
    rounded = ((bits + bias) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def quantize(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and returned as float64 (exact for every dtype)."""
    x = np.asarray(x, np.float64)
    if dtype == "bfloat16":
        return _bfloat16_round(x)
    return x.astype(dtype).astype(np.float64)


@dataclass(frozen=True)
class Shape:
    """Sizes of one test input (DLA-1.1)."""

    B: int
    T: int
    H: int
    K: int
    V: int


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def correlated_keys(rng: np.random.Generator, s: Shape) -> np.ndarray:
    """Keys whose consecutive cosines spread over ``[-1, 1]``: a mix of stable runs and jumps."""
    k = rng.standard_normal((s.B, s.T, s.H, s.K))
    rho = rng.choice([0.97, 0.8, 0.3, 0.0, -0.5], size=(s.B, s.T, s.H))
    for t in range(1, s.T):
        r = rho[:, t, :, None]
        k[:, t] = r * k[:, t - 1] + np.sqrt(1 - r * r) * k[:, t]
    return k


def dyadic_scores(rng: np.random.Generator, shape: tuple[int, ...], denom: int = 4,
                  top: int = 2) -> np.ndarray:
    """External scores ``j / denom`` in ``[0, top]``: exact in float16, bfloat16 and up.

    Few distinct values make exact ties in boundary decisions (``iota == tau``)
    and in merge costs frequent, so DLA-3.1's strictness and DLA-3.4's
    tie-break are exercised.
    """
    return rng.integers(0, denom * top + 1, size=shape).astype(np.float64) / denom


def random_inputs(rng: np.random.Generator, s: Shape, config: Config, dtype: str,
                  *, keys: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``q, k, v, g, lam`` (and ``beta`` / ``scores`` when the config uses them), quantized."""
    k = correlated_keys(rng, s) if keys is None else keys
    if config.base == "delta":
        k = _unit(k)  # keeps (I - beta k k^T) a contraction, as the gated delta rule does
    out = {
        "q": rng.standard_normal((s.B, s.T, s.H, s.K)),
        "k": k,
        "v": rng.standard_normal((s.B, s.T, s.H, s.V)),
        "g": -rng.uniform(0.0, 0.5, (s.B, s.T, s.H)),
        "lam": rng.uniform(0.25, 1.5, (s.B, s.T, s.H, config.capacity)),
    }
    if config.base == "delta":
        out["beta"] = rng.uniform(0.0, 1.5, (s.B, s.T, s.H))
    if config.score == "external":
        out["scores"] = dyadic_scores(rng, (s.B, s.T, s.H))
    return {n: quantize(x, dtype) for n, x in out.items()}


def min_margin(config: Config, inputs: dict[str, np.ndarray], **kw: Any) -> float:
    """DLA-6.3: the smallest decision margin of the reference plan for these inputs."""
    scores = inputs.get("scores")
    k = None if scores is not None else inputs["k"]
    return plan_with_margins(config, k=k, scores=scores, **kw)[1].minimum()


class MarginError(RuntimeError):
    """No draw met the margin bound within the allowed number of tries."""


def margin_inputs(rng: np.random.Generator, s: Shape, config: Config, dtype: str, bound: float,
                  *, tries: int = 200,
                  transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                  **plan_kw: Any) -> tuple[dict[str, np.ndarray], float]:
    """Inputs whose smallest decision margin exceeds ``bound`` (DLA-10.3).

    Draws (passed through ``transform`` if given) are rejected and
    regenerated; the margin of the accepted draw is returned so a report can
    state it. ``plan_kw`` (``cu_seqlens``, ``initial_cache``) is passed to the
    reference planner.
    """
    best = -1.0
    for _ in range(tries):
        inputs = random_inputs(rng, s, config, dtype)
        if transform is not None:
            inputs = transform(inputs)
        m = min_margin(config, inputs, **plan_kw)
        if m > bound:
            return inputs, m
        best = max(best, m)
    raise MarginError(f"no input with decision margin > {bound:g} in {tries} draws "
                      f"(best {best:.3g}) for {s} and {config}")


def _split(rng: np.random.Generator, total: int, parts: int) -> list[int]:
    cuts = np.sort(rng.integers(0, total + 1, size=max(parts - 1, 0)))
    bounds = [0, *(int(c) for c in cuts), total]
    return [b - a for a, b in pairwise(bounds)]


def piece_lengths(rng: np.random.Generator, T: int, n: int) -> list[int]:
    """``n`` piece lengths summing to ``T``, in random order; with ``n >= 3`` and ``T >= 1``
    one piece has length 0 and one length 1."""
    lengths = [0, 1, *_split(rng, T - 1, n - 2)] if n >= 3 and T >= 1 else _split(rng, T, n)
    return [lengths[i] for i in rng.permutation(len(lengths))]


def cu_seqlens_for(lengths: list[int]) -> np.ndarray:
    """``cu_seqlens`` (DLA-8.1) for sequences of the given lengths."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def fenwick_config(T: int, **kw: Any) -> Config:
    """A ``fenwick`` config with exactly the capacity positions ``0 .. T-1`` need (DLA-4.2)."""
    return Config(capacity=fenwick_capacity(T), policy="fenwick", **kw)
