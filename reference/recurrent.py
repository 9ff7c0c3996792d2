"""The recurrent executor (spec section DLA-5): states stepped token by token.

Given a plan, every step rebuilds the partition at ``t`` from the one at
``t - 1``: the partition only coarsens (DLA-3.6), so each new state is the sum
of the old states whose starts fall inside it, plus token ``t`` in the newest
one. That single rule covers opening, writing and any number of merges, for
every policy.
"""

from __future__ import annotations

import numpy as np


def membership(old_starts: np.ndarray, old_count: np.ndarray, new_starts: np.ndarray,
               new_count: np.ndarray) -> np.ndarray:
    """``M [R, C, C]`` with ``M[r, j, i] = 1`` iff old state ``i`` lies inside new state ``j``.

    New state ``j`` spans ``[new_starts[j], new_starts[j + 1])`` (DLA-3.6).
    """
    R, C = new_starts.shape
    j = np.arange(C)
    big = np.iinfo(np.int64).max
    lo = np.where(j < new_count[:, None], new_starts, big)
    hi = np.concatenate([lo[:, 1:], np.full((R, 1), big)], axis=1)
    hi = np.where(j < new_count[:, None], hi, big)
    s = np.where(j < old_count[:, None], old_starts, -1)[:, None, :]  # [R, 1, C_old]
    return ((s >= lo[:, :, None]) & (s < hi[:, :, None])).astype(np.float64)


def transition(S: np.ndarray, g_t: np.ndarray, k_t: np.ndarray, beta_t: np.ndarray | None,
               base: str) -> np.ndarray:
    """DLA-5.1, DLA-5.2 step 1: transition every state of ``S [R, C, K, V]``."""
    decay = np.exp(g_t)[:, None, None, None]
    if base == "gla":
        return decay * S
    # delta: S <- exp(g) (I - beta k k^T) S
    assert beta_t is not None, "beta: required by the delta base (DLA-5.2)"
    kS = np.einsum("rk,rckv->rcv", k_t, S)
    return decay * (S - beta_t[:, None, None, None] * k_t[:, None, :, None] * kS[:, :, None, :])


def write(k_t: np.ndarray, v_t: np.ndarray, beta_t: np.ndarray | None, base: str) -> np.ndarray:
    """DLA-5.1, DLA-5.2 step 3: the rank-one write ``k v^T`` (``beta k v^T`` for delta)."""
    kv = k_t[:, :, None] * v_t[:, None, :]
    if base == "gla":
        return kv
    assert beta_t is not None, "beta: required by the delta base (DLA-5.2)"
    return beta_t[:, None, None] * kv


def readout(q_t: np.ndarray, S: np.ndarray, lam_t: np.ndarray, labels: np.ndarray,
            count: np.ndarray, scale: float) -> np.ndarray:
    """DLA-5.3: ``o_t = scale * sum_i lam_t[label_i] (q_t^T S_i)`` over the ``count`` states."""
    C = labels.shape[1]
    used = np.arange(C) < count[:, None]
    w = np.where(used, np.take_along_axis(lam_t, np.where(used, labels, 0), axis=1), 0.0)
    return scale * np.einsum("rk,rckv,rc->rv", q_t, S, w)


def execute_rows(q, k, v, g, lam, beta, iota, starts, labels, count, base: str, scale: float,
                 S0: np.ndarray, info0: np.ndarray, starts0: np.ndarray, count0: np.ndarray):
    """DLA-5: run ``R`` rows through ``T`` steps of a plan.

    Shapes: ``q, k [R, T, K]``, ``v [R, T, V]``, ``g, beta, iota [R, T]``,
    ``lam [R, T, C]``, plan fields ``[R, T, C]`` / ``[R, T]``; ``S0 [R, C, K, V]``
    with ``info0``, ``starts0 [R, C]`` and ``count0 [R]`` the carried states
    (DLA-7). Returns ``o [R, T, V]``, the final states and their information
    (DLA-3.2, accounted through the same merges as the states).
    """
    R, T, _ = q.shape
    S = S0.copy()
    info = info0.copy()
    o = np.zeros((R, T, v.shape[-1]))
    prev_starts, prev_count = starts0, count0
    rows = np.arange(R)
    for t in range(T):
        b_t = None if beta is None else beta[:, t]
        S = transition(S, g[:, t], k[:, t], b_t, base)
        M = membership(prev_starts, prev_count, starts[:, t], count[:, t])
        S = np.einsum("rji,rikv->rjkv", M, S)
        info = np.einsum("rji,ri->rj", M, info)
        S[rows, count[:, t] - 1] += write(k[:, t], v[:, t], b_t, base)
        info[rows, count[:, t] - 1] += iota[:, t]
        o[:, t] = readout(q[:, t], S, lam[:, t], labels[:, t], count[:, t], scale)
        prev_starts, prev_count = starts[:, t], count[:, t]
    return o, S, info
