"""Shared helpers of the reference tests: random inputs and deliberately naive oracles.

The oracles here are written independently of ``dla.reference`` and as plainly
as possible (Python lists, one token and one row at a time), so that a test
comparing the reference with them checks the spec text, not the reference
against itself:

- :func:`base_recurrence`: single-state gated linear attention / gated delta
  rule (DLA-5.1, DLA-5.2, DLA-5.5);
- :func:`naive_dla_plan`: the DLA policy as a list of segments (DLA-3);
- :func:`naive_fenwick_plan`: the Fenwick partition from ``bit_length(t ^ s)``
  (DLA-4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import dla


# ----------------------------------------------------------------- random inputs
def random_inputs(
    seed: int, B: int, T: int, H: int, K: int, V: int, C: int, *, base: str = "gla",
    score: str = "key_cosine", dyadic: bool = True, dtype: type = np.float64,
) -> dict[str, np.ndarray]:
    """The array arguments of ``forward``: ``q, k, v, g, lam`` (+ ``beta`` / ``scores``).

    Keys are L2-normalized for the delta base (the gated delta rule is only
    stable for ``beta |k|^2 <= 2``). External scores are on the dyadic grid
    ``{0, 1/4, ..., 7/4}`` when ``dyadic`` (exact ties happen), else uniform.
    """
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((B, T, H, K))
    if base == "delta":
        k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-3)
    x: dict[str, np.ndarray] = {
        "q": rng.standard_normal((B, T, H, K)),
        "k": k,
        "v": rng.standard_normal((B, T, H, V)),
        "g": -rng.uniform(0.0, 0.5, (B, T, H)),
        "lam": rng.uniform(0.0, 1.0, (B, T, H, C)),
    }
    if base == "delta":
        x["beta"] = rng.uniform(0.0, 1.0, (B, T, H))
    if score == "external":
        x["scores"] = dyadic_scores(rng, (B, T, H)) if dyadic else rng.uniform(0, 2, (B, T, H))
    return {n: a.astype(dtype) for n, a in x.items()}


def dyadic_scores(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Scores on the grid ``{0, 1/4, ..., 7/4}``: sums are exact, so ties are exact."""
    return rng.integers(0, 8, size=shape).astype(np.float64) / 4.0


def dyadic_lists(min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[list[float]]:
    """Hypothesis: a list of dyadic scores (multiples of 1/4 in ``[0, 2]``)."""
    return st.lists(st.integers(0, 8).map(lambda i: i / 4.0), min_size=min_size, max_size=max_size)


def config(C: int, *, tau: float = 0.5, score: str = "key_cosine", policy: str = "dla",
           base: str = "gla", scale: float | None = None) -> dla.Config:
    return dla.Config(capacity=C, tau=tau, score=score, policy=policy, base=base, scale=scale)


def slice_t(x: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    """The inputs restricted to positions ``[a, b)``."""
    return {n: v[:, a:b] for n, v in x.items()}


# ----------------------------------------------------------------- single-state base model
def base_recurrence(q, k, v, g, beta, base: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """DLA-5.1/5.2 with ONE state: gated linear attention or the gated delta rule.

    Inputs in the ``[B, T, H, ...]`` layout. Returns ``o [B, T, H, V]`` and the
    state after every token, ``S [B, T, H, K, V]``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = np.zeros((B, T, H, V))
    states = np.zeros((B, T, H, K, V))
    for b in range(B):
        for h in range(H):
            S = np.zeros((K, V))
            for t in range(T):
                kt, vt = k[b, t, h], v[b, t, h]
                if base == "gla":
                    S = np.exp(g[b, t, h]) * S + np.outer(kt, vt)
                else:
                    bt = beta[b, t, h]
                    S = np.exp(g[b, t, h]) * (S - bt * np.outer(kt, kt @ S)) + bt * np.outer(kt, vt)
                states[b, t, h] = S
                o[b, t, h] = scale * (q[b, t, h] @ S)
    return o, states


# ----------------------------------------------------------------- naive planners
@dataclass
class NaiveStep:
    """The partition at one readout: starts and labels oldest first, plus the decisions."""

    boundary: bool
    starts: list[int]
    labels: list[int]
    infos: list[float]
    boundary_margin: float
    merge_margin: float


def naive_dla_plan(
    iota: list[float], C: int, tau: float, carried: list[tuple[int, float]] | None = None,
    position: int = 0,
) -> list[NaiveStep]:
    """DLA-3 for one row, one token at a time, with the segments as a Python list.

    ``carried`` is the list of ``(start, info)`` of a carried cache of
    ``position`` tokens (DLA-7); positions continue after the carried tokens.
    """
    segs = [list(s) for s in (carried or [])]
    steps = []
    for j, x in enumerate(iota):
        t = position + j
        forced = not segs
        opened = forced or x > tau
        if opened:
            segs.append([t, 0.0])
        segs[-1][1] += x
        merge_margin = float("inf")
        if len(segs) > C:
            costs = [segs[i][1] + segs[i + 1][1] for i in range(len(segs) - 1)]
            best = min(costs)
            i = costs.index(best)  # first minimum: the oldest pair
            if len(costs) > 1:
                merge_margin = sorted(costs)[1] - best
            segs[i][1] += segs[i + 1][1]
            del segs[i + 1]
        steps.append(NaiveStep(
            boundary=opened, starts=[s for s, _ in segs],
            labels=list(range(len(segs) - 1, -1, -1)), infos=[i for _, i in segs],
            boundary_margin=float("inf") if forced else abs(x - tau), merge_margin=merge_margin,
        ))
    return steps


def fenwick_level(t: int, s: int) -> int:
    """DLA-4.1, computed with Python integers: ``bit_length(t XOR s)``."""
    return (t ^ s).bit_length()


def naive_fenwick_plan(T: int) -> list[NaiveStep]:
    """DLA-4.1 for one fresh row: group the tokens ``0..t`` by level, oldest first."""
    steps = []
    for t in range(T):
        first: dict[int, int] = {}
        for s in range(t + 1):
            first.setdefault(fenwick_level(t, s), s)
        order = sorted(first.items(), key=lambda kv: kv[1])
        steps.append(NaiveStep(
            boundary=True, starts=[s for _, s in order], labels=[lv for lv, _ in order],
            infos=[], boundary_margin=float("inf"), merge_margin=float("inf"),
        ))
    return steps


def padded(values: list[int], C: int) -> list[int]:
    """A slot list padded with ``-1`` to ``C`` entries (DLA-6.1)."""
    return list(values) + [-1] * (C - len(values))
