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

from dla.config import Config
from dla.reference.api import plan_with_margins
from dla.reference.policies import fenwick_capacity


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


def dyadic_scores(
    rng: np.random.Generator, shape: tuple[int, ...], denom: int = 4, top: int = 2
) -> np.ndarray:
    """External scores ``j / denom`` in ``[0, top]``: exact in float16, bfloat16 and up.

    Few distinct values make exact ties in boundary decisions (``iota == tau``)
    and in merge costs frequent, so DLA-3.1's strictness and DLA-3.4's
    tie-break are exercised.
    """
    return rng.integers(0, denom * top + 1, size=shape).astype(np.float64) / denom


def random_inputs(
    rng: np.random.Generator,
    s: Shape,
    config: Config,
    dtype: str,
    *,
    keys: np.ndarray | None = None,
    g_range: tuple[float, float] = (0.0, 0.5),
) -> dict[str, np.ndarray]:
    """``q, k, v, g, lam`` (and ``beta`` / ``scores`` when the config uses them), quantized.

    ``g`` is drawn from ``-g_range``. Under the delta base keys get norms in
    ``[0.5, 1.15]``: with ``beta <= 1.5``, ``beta |k|^2 < 2`` keeps ``I - beta k k^T``
    stable, and a kernel that normalises keys inside is not certified by luck
    (keys are used as given, DLA-5.2).
    """
    k = correlated_keys(rng, s) if keys is None else keys
    if config.base == "delta":
        k = _unit(k) * rng.uniform(0.5, 1.15, (*k.shape[:-1], 1))
    out = {
        "q": rng.standard_normal((s.B, s.T, s.H, s.K)),
        "k": k,
        "v": rng.standard_normal((s.B, s.T, s.H, s.V)),
        "g": -rng.uniform(g_range[0], g_range[1], (s.B, s.T, s.H)),
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


def _score_targets(
    rng: np.random.Generator, shape: tuple[int, ...], tau: float, gap: float
) -> np.ndarray:
    """Key-cosine scores in ``[0, 2]`` that keep ``gap`` away from ``tau`` on both sides.

    Mostly stable tokens (below ``tau``) with jumps (above it), so states open
    and, once more than ``C`` exist, merge.
    """
    lo = (0.0, tau - gap) if tau - gap > 0 else None
    hi = (max(tau + gap, 0.0), 2.0) if tau + gap < 2 else None
    bands = [b for b in (lo, hi) if b is not None]
    if not bands:
        return rng.uniform(0.0, 2.0, shape)
    pick_hi = rng.random(shape) < (0.35 if len(bands) == 2 else 1.0)
    first, last = bands[0], bands[-1]
    low = np.where(pick_hi, last[0], first[0])
    high = np.where(pick_hi, last[1], first[1])
    return rng.uniform(low, high)


def keys_with_scores(rng: np.random.Generator, iota: np.ndarray, K: int) -> np.ndarray:
    """Keys ``[B, T, H, K]`` whose consecutive scores ``1 - cos(k_t, k_{t-1})`` are ``iota``.

    ``k_t = |k_t| (c u + sqrt(1 - c^2) w)`` with ``u`` the previous key's
    direction, ``w`` a random unit vector orthogonal to it and ``c = 1 - iota_t``
    (``iota[:, 0]`` is unused). Needs ``K >= 2``.
    """
    B, T, H = iota.shape
    k = np.zeros((B, T, H, K))
    if T == 0:
        return k
    k[:, 0] = _unit(rng.standard_normal((B, H, K)))
    for t in range(1, T):
        u = k[:, t - 1]
        w = rng.standard_normal((B, H, K))
        w = _unit(w - np.sum(w * u, axis=-1, keepdims=True) * u)
        c = (1.0 - iota[:, t])[..., None]
        k[:, t] = c * u + np.sqrt(np.clip(1.0 - c * c, 0.0, None)) * w
    return k * rng.uniform(0.5, 2.0, (B, T, H, 1))


def designed_keys(rng: np.random.Generator, s: Shape, tau: float, gap: float) -> np.ndarray:
    """Keys whose scores avoid ``[tau - gap, tau + gap]`` (random keys if ``K = 1``)."""
    if s.K < 2:
        return rng.standard_normal((s.B, s.T, s.H, s.K))
    return keys_with_scores(rng, _score_targets(rng, (s.B, s.T, s.H), tau, gap), s.K)


def near_tie_keys(rng: np.random.Generator, s: Shape, tau: float, eps: float = 1e-7) -> np.ndarray:
    """Keys whose scores sit within about ``eps`` of ``tau`` half of the time (DLA-10.3).

    In float32 or lower such boundary decisions may flip, so these inputs are
    for checks that inject the reference plan (DLA-6.2, DLA-12.2).
    """
    if s.K < 2 or not 0.0 < tau < 2.0:
        return rng.standard_normal((s.B, s.T, s.H, s.K))
    shape = (s.B, s.T, s.H)
    near = np.clip(tau + eps * rng.standard_normal(shape), 0.0, 2.0)
    iota = np.where(rng.random(shape) < 0.5, near, rng.uniform(0.0, 2.0, shape))
    return keys_with_scores(rng, iota, s.K)


def _row_margins(config: Config, inputs: dict[str, np.ndarray], **plan_kw: Any) -> np.ndarray:
    """The smallest decision margin of each row ``(b, h)``: ``[B, H]``."""
    scores = inputs.get("scores")
    k = None if scores is not None else inputs["k"]
    m = plan_with_margins(config, k=k, scores=scores, **plan_kw)[1]
    both = np.minimum(m.boundary, m.merge)
    return both.min(axis=1) if both.shape[1] else np.full((both.shape[0], both.shape[2]), np.inf)


def margin_inputs(
    rng: np.random.Generator,
    s: Shape,
    config: Config,
    dtype: str,
    bound: float,
    *,
    tries: int = 200,
    transform: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    **plan_kw: Any,
) -> tuple[dict[str, np.ndarray], float]:
    """Key-cosine inputs whose smallest decision margin exceeds ``bound`` (DLA-10.3).

    Keys are designed so that no score falls within ``2 * bound`` of ``tau``
    (:func:`designed_keys`); rows (``(b, h)`` pairs, independent by DLA-1.1)
    whose margins are still too small, e.g. a near-tie between merge costs,
    get new keys until every row clears the bound. Draws pass through
    ``transform`` if given; ``plan_kw`` (``cu_seqlens``, ``initial_cache``) goes
    to the reference planner. Returns the inputs and their smallest margin.
    """

    def draw() -> dict[str, np.ndarray]:
        keys = designed_keys(rng, s, config.tau, 2.0 * bound)
        x = random_inputs(rng, s, config, dtype, keys=keys)
        return x if transform is None else transform(x)

    inputs = draw()
    for _ in range(tries):
        rows = _row_margins(config, inputs, **plan_kw)
        bad = rows <= bound
        if not bad.any():
            return inputs, float(rows.min()) if rows.size else float("inf")
        fresh = draw()
        b_idx, h_idx = np.nonzero(bad)
        for name in inputs:
            inputs[name][b_idx, :, h_idx] = fresh[name][b_idx, :, h_idx]
    raise MarginError(
        f"no input with decision margin > {bound:g} in {tries} draws "
        f"(best {float(rows.min()):.3g}) for {s} and {config}"
    )


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
