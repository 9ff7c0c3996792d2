"""Token scores ``iota_t`` (spec section DLA-2)."""

from __future__ import annotations

import numpy as np


def _power_of_two_normalized(x: np.ndarray) -> np.ndarray:
    """``x`` times a power of two putting its largest ``|entry|`` in ``[0.5, 1)`` (0 stays 0).

    The scaling is exact and the cosine does not depend on it; it keeps the
    squared norms below far from overflow and underflow, and it maps a key and
    any power-of-two multiple of it (``-k`` included) to the same vector up to sign.
    """
    _, exponent = np.frexp(np.max(np.abs(x), axis=-1, keepdims=True))
    return np.ldexp(x, -exponent)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DLA-2.1, DLA-2.2: cosine of the last axis, clamped to [-1, 1]; 0 if either norm is 0.

    Computed as ``(a . b) / sqrt((a . a) (b . b))`` so that identical keys give
    exactly 1 (``sqrt(x * x) == x`` in binary floating point) and opposite keys
    exactly -1; ``1 - cos`` is then exactly 0 or 2, as DLA-2.1 states.
    """
    a, b = _power_of_two_normalized(a), _power_of_two_normalized(b)
    aa, bb = np.sum(a * a, axis=-1), np.sum(b * b, axis=-1)
    nonzero = (aa > 0) & (bb > 0)
    denom = np.sqrt(np.where(nonzero, aa * bb, 1.0))
    cos = np.where(nonzero, np.sum(a * b, axis=-1) / denom, 0.0)
    return np.clip(cos, -1.0, 1.0)


def key_cosine(k: np.ndarray, prev_key: np.ndarray | None,
               carried: np.ndarray | None = None) -> np.ndarray:
    """DLA-2.1 to DLA-2.3: ``iota_t = 1 - cos(k_t, k_{t-1})`` for rows ``k [R, T, K]``.

    ``prev_key [R, K]`` is the carried key of DLA-2.3 and ``carried [R]`` marks
    the rows that continue a cache of at least one token. Every other row (or
    all rows when ``prev_key`` is ``None``) is a fresh sequence, whose first
    score is ``iota_0 = 0`` whatever its cache's ``prev_key`` holds.
    """
    R, T, _ = k.shape
    iota = np.zeros((R, T))
    if T == 0:
        return iota
    iota[:, 1:] = 1.0 - cosine(k[:, 1:], k[:, :-1])
    if prev_key is not None:
        continues = np.ones(R, bool) if carried is None else carried
        iota[:, 0] = np.where(continues, 1.0 - cosine(k[:, 0], prev_key), 0.0)
    return iota


def token_scores(
    score: str, k: np.ndarray | None, scores: np.ndarray | None, prev_key: np.ndarray | None,
    carried: np.ndarray | None = None,
) -> np.ndarray:
    """DLA-2: the scores ``iota [R, T]`` of one chunk of rows, in float64.

    ``carried [R]``: rows that continue a cache of at least one token (DLA-2.3).
    """
    if score == "external":
        assert scores is not None
        return np.asarray(scores, dtype=np.float64)
    assert k is not None
    return key_cosine(np.asarray(k, dtype=np.float64), prev_key, carried)
