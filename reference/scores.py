"""Token scores ``iota_t`` (spec section DLA-2)."""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DLA-2.1, DLA-2.2: cosine of the last axis, clamped to [-1, 1]; 0 if either norm is 0."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    denom = na * nb
    safe = np.where(denom > 0, denom, 1.0)
    cos = np.where(denom > 0, np.sum(a * b, axis=-1) / safe, 0.0)
    return np.clip(cos, -1.0, 1.0)


def key_cosine(k: np.ndarray, prev_key: np.ndarray | None) -> np.ndarray:
    """DLA-2.1 to DLA-2.3: ``iota_t = 1 - cos(k_t, k_{t-1})`` for rows ``k [R, T, K]``.

    ``prev_key [R, K]`` is the carried key of DLA-2.3 (``None`` for a fresh
    sequence, whose first score is ``iota_0 = 0``).
    """
    R, T, _ = k.shape
    iota = np.zeros((R, T))
    if T == 0:
        return iota
    iota[:, 1:] = 1.0 - cosine(k[:, 1:], k[:, :-1])
    if prev_key is not None:
        iota[:, 0] = 1.0 - cosine(k[:, 0], prev_key)
    return iota


def token_scores(
    score: str, k: np.ndarray | None, scores: np.ndarray | None, prev_key: np.ndarray | None
) -> np.ndarray:
    """DLA-2: the scores ``iota [R, T]`` of one chunk of rows, in float64."""
    if score == "external":
        assert scores is not None
        return np.asarray(scores, dtype=np.float64)
    assert k is not None
    return key_cosine(np.asarray(k, dtype=np.float64), prev_key)
