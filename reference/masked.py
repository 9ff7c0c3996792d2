"""The masked (parallel) form of the ``gla`` base (spec clause DLA-5.4).

``o_t = scale * sum_{s <= t} lam_t[label_t(s)] * exp(G_t - G_s) * (q_t . k_s) v_s``
with ``G = cumsum(g)``. It needs no state matrices, so it is an independent
check of the recurrent executor. It covers fresh sequences (no carried cache).
"""

from __future__ import annotations

import numpy as np


def token_labels(starts: np.ndarray, labels: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``label_t(s) [R, T, T]`` for ``s <= t`` (``-1`` above the diagonal), from a row plan."""
    _, T, C = starts.shape
    s = np.arange(T)
    used = np.arange(C)[None, None, :] < count[:, :, None]  # [R, T, C]
    # slot of s = number of used starts <= s, minus one
    le = (starts[:, :, None, :] <= s[None, None, :, None]) & used[:, :, None, :]
    slot = le.sum(axis=-1) - 1  # [R, T, T]
    lab = np.take_along_axis(labels, np.clip(slot, 0, C - 1), axis=2)
    causal = s[None, :] <= s[:, None]
    return np.where(causal[None], lab, -1)


def execute_masked_rows(q, k, v, g, lam, starts, labels, count, scale: float) -> np.ndarray:
    """DLA-5.4: the masked form for ``R`` fresh rows; returns ``o [R, T, V]``."""
    G = np.cumsum(g, axis=1)
    lab = token_labels(starts, labels, count)
    causal = lab >= 0
    w = np.take_along_axis(lam, np.where(causal, lab, 0), axis=2)  # [R, T, T]: lam_t[label_t(s)]
    decay = np.exp(np.where(causal, G[:, :, None] - G[:, None, :], -np.inf))
    A = np.einsum("rtk,rsk->rts", q, k) * decay * np.where(causal, w, 0.0)
    return scale * np.einsum("rts,rsv->rtv", A, v)
