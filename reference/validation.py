"""Input validation shared by every implementation (spec section DLA-9).

Each check raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong
shape or value) with a message that names the argument and the rule, so a
conforming caller never gets a silently wrong answer. The functions work on
NumPy arrays and on torch tensors alike (torch is never imported here), so
the optimized implementations call this module instead of copying it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from dla.arrays import as_numpy, is_torch
from dla.cache import Cache
from dla.config import Config
from dla.plan import Plan

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
_INT_NAMES = ("int32", "int64")


@dataclass(frozen=True)
class Dims:
    """The sizes every argument is checked against (DLA-1.1)."""

    B: int
    T: int
    H: int
    K: int
    V: int
    C: int


def dtype_name(x: Any) -> str:
    """``'float32'`` for both ``np.float32`` and ``torch.float32``."""
    return str(x.dtype).removeprefix("torch.")


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or is_torch(x)


def _require_array(name: str, x: Any, clause: str = "DLA-9.3") -> None:
    if not _is_array(x):
        raise TypeError(f"{name}: expected an array or tensor, got {type(x).__name__} ({clause})")


def _require_shape(
    name: str, x: Any, expected: tuple[int, ...], layout: str, clause: str = "DLA-9.1"
) -> None:
    if tuple(x.shape) != expected:
        raise ValueError(
            f"{name}: expected shape {layout} = {list(expected)}, got {list(x.shape)} ({clause})"
        )


def _host(x: Any) -> np.ndarray:
    """A NumPy view or copy of an array or tensor, for checks of its values."""
    return as_numpy(x)


def _require_int(name: str, x: Any, clause: str) -> None:
    _require_array(name, x, clause)
    if dtype_name(x) not in _INT_NAMES:
        raise TypeError(f"{name}: expected int32 or int64, got {dtype_name(x)} ({clause})")


def _check_slots(owner: str, starts: np.ndarray, labels: np.ndarray, count: np.ndarray,
                 clause: str) -> None:
    """DLA-3.6, DLA-6.1, DLA-7.1: the ``count`` used slots (oldest first) of every row hold
    strictly increasing starts from 0 and labels in ``[0, C)``; unused slots hold -1.
    """
    C = starts.shape[-1]
    used = np.arange(C) < count[..., None]
    if np.any(np.where(used, False, (starts != -1) | (labels != -1))):
        raise ValueError(
            f"{owner}.starts: slots >= count must hold -1 in starts and labels ({clause})"
        )
    if np.any((count > 0) & (starts[..., 0] != 0)):
        raise ValueError(f"{owner}.starts: the oldest state must start at position 0 ({clause})")
    if np.any(used[..., 1:] & (np.diff(starts, axis=-1) <= 0)):
        raise ValueError(
            f"{owner}.starts: starts must strictly increase over the used slots ({clause})"
        )
    if np.any(used & ((labels < 0) | (labels >= C))):
        raise ValueError(f"{owner}.labels: used slots need labels in [0, C = {C}) ({clause})")


def _require_float(name: str, x: Any, clause: str = "DLA-9.3") -> None:
    if dtype_name(x) not in _FLOAT_NAMES:
        raise TypeError(
            f"{name}: expected a floating dtype {_FLOAT_NAMES}, got {dtype_name(x)} ({clause})"
        )


def _all_finite(x: Any) -> bool:
    if is_torch(x):
        if x.numel() == 0:
            return True
        # min and max propagate NaN and +-inf, so both extremes are finite iff every entry is;
        # one fused reduction and one device sync cost far less than materializing isfinite(x).
        lo, hi = x.aminmax()
        return bool((lo.isfinite() & hi.isfinite()).item())
    return bool(np.isfinite(x).all())


def _require_finite(name: str, x: Any) -> None:
    if not _all_finite(x):
        raise ValueError(f"{name}: contains NaN or Inf; every input must be finite (DLA-9.4)")


def _max(x: Any) -> float:
    return float(x.max().item()) if is_torch(x) else float(np.max(x))


def _min(x: Any) -> float:
    return float(x.min().item()) if is_torch(x) else float(np.min(x))


def _require_float_input(name: str, x: Any, shape: tuple[int, ...], layout: str) -> None:
    _require_array(name, x)
    _require_shape(name, x, shape, layout)
    _require_float(name, x)
    _require_finite(name, x)


def check_dtypes(named: dict[str, Any]) -> None:
    """DLA-1.3: ``q``, ``k``, ``v`` share one dtype; gate-like tensors use it or float32."""
    qkv = {n: dtype_name(x) for n, x in named.items() if n in ("q", "k", "v")}
    if len(set(qkv.values())) > 1:
        raise TypeError(f"q, k, v: must share one dtype (DLA-1.3, DLA-9.3), got {qkv}")
    compute = qkv.get("q")
    for n, x in named.items():
        if n in ("q", "k", "v") or x is None:
            continue
        if dtype_name(x) not in (compute, "float32", "float64"):
            raise TypeError(
                f"{n}: dtype must be q's dtype ({compute}), float32 or float64 (DLA-1.3, DLA-9.3), "
                f"got {dtype_name(x)}"
            )


def infer_dims(q: Any, v: Any, config: Config) -> Dims:
    """DLA-1.1: read ``B, T, H, K`` from ``q`` and ``V`` from ``v``."""
    for name, x in (("q", q), ("v", v)):
        _require_array(name, x)
        if x.ndim != 4:
            raise ValueError(
                f"{name}: expected 4 dimensions [B, T, H, D], got shape {list(x.shape)} (DLA-9.1)"
            )
    B, T, H, K = (int(s) for s in q.shape)
    if min(B, H, K) < 1:
        raise ValueError(f"q: B, H and K must be >= 1, got shape {list(q.shape)} (DLA-9.1)")
    V = int(v.shape[-1])
    if V < 1:
        raise ValueError(f"v: V must be >= 1, got shape {list(v.shape)} (DLA-9.1)")
    return Dims(B=B, T=T, H=H, K=K, V=V, C=config.capacity)


def check_config(config: Any) -> Config:
    if not isinstance(config, Config):
        raise TypeError(f"config: expected dla.Config, got {type(config).__name__} (DLA-9.2)")
    return config


def check_scores_source(
    config: Config, k: Any, scores: Any, dims_bth: tuple[int, int, int]
) -> None:
    """DLA-9.12 and DLA-2.4: exactly the score source the config asks for is given."""
    B, T, H = dims_bth
    if config.score == "external":
        if scores is None:
            raise ValueError("scores: required when config.score == 'external' (DLA-9.12)")
        _require_float_input("scores", scores, (B, T, H), "[B, T, H]")
        if T and _min(scores) < 0:
            raise ValueError("scores: external scores must be >= 0 (DLA-2.4, DLA-9.6)")
    else:
        if scores is not None:
            raise ValueError(
                "scores: only used when config.score == 'external'; got scores with "
                f"score={config.score!r} (DLA-9.12)"
            )
        if k is None:
            raise ValueError("k: required to compute key_cosine scores (DLA-2.1, DLA-9.12)")


def check_array_kind(named: dict[str, Any], kind: str) -> None:
    """DLA-9.3: every array argument is of the implementation's own kind, ``"numpy"`` or
    ``"torch"`` (DLA-11.1); ``None`` entries are skipped, non-arrays are left to the other checks.
    """
    for name, x in named.items():
        if x is None or not _is_array(x):
            continue
        if (kind == "numpy") != isinstance(x, np.ndarray):
            raise TypeError(
                f"{name}: expected a {kind} array (this implementation's kind), got "
                f"{type(x).__module__}.{type(x).__name__} (DLA-9.3)"
            )


def check_forward_inputs(
    q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, beta: Any, scores: Any
) -> Dims:
    """DLA-9: every rule on the arguments of ``forward``; returns the sizes."""
    check_config(config)
    d = infer_dims(q, v, config)
    _require_float_input("q", q, (d.B, d.T, d.H, d.K), "[B, T, H, K]")
    _require_float_input("k", k, (d.B, d.T, d.H, d.K), "[B, T, H, K]")
    _require_float_input("v", v, (d.B, d.T, d.H, d.V), "[B, T, H, V]")
    _require_float_input("g", g, (d.B, d.T, d.H), "[B, T, H]")
    if d.T and _max(g) > 0:
        raise ValueError("g: log decay must be <= 0 everywhere (DLA-1.4, DLA-9.5)")
    _require_array("lam", lam)
    if lam.ndim == 4 and tuple(lam.shape[:3]) == (d.B, d.T, d.H) and lam.shape[3] != d.C:
        raise ValueError(
            f"lam: last dimension must equal config.capacity = {d.C}, got {lam.shape[3]} (DLA-9.7)"
        )
    _require_float_input("lam", lam, (d.B, d.T, d.H, d.C), "[B, T, H, C]")
    if config.base == "delta":
        if beta is None:
            raise ValueError("beta: required when config.base == 'delta' (DLA-5.2, DLA-9.12)")
        _require_float_input("beta", beta, (d.B, d.T, d.H), "[B, T, H]")
        if d.T and (_min(beta) < 0 or _max(beta) > 2):
            raise ValueError("beta: must lie in [0, 2] (DLA-1.4, DLA-9.5)")
    elif beta is not None:
        raise ValueError(
            "beta: only used when config.base == 'delta'; got beta with base='gla' (DLA-9.12)"
        )
    check_scores_source(config, k, scores, (d.B, d.T, d.H))
    check_dtypes({"q": q, "k": k, "v": v, "g": g, "lam": lam, "beta": beta, "scores": scores})
    return d


def check_plan_inputs(config: Config, k: Any, scores: Any) -> tuple[int, int, int, int | None]:
    """DLA-9: the rules on the arguments of ``make_plan``; returns ``B, T, H, K``."""
    check_config(config)
    src = scores if config.score == "external" else k
    name = "scores" if config.score == "external" else "k"
    if src is None:
        check_scores_source(config, k, scores, (0, 0, 0))
    _require_array(name, src)
    if src.ndim < 3:
        raise ValueError(f"{name}: expected [B, T, H, ...], got shape {list(src.shape)} (DLA-9.1)")
    B, T, H = (int(s) for s in src.shape[:3])
    K = None
    if k is not None:
        _require_array("k", k)
        if k.ndim != 4:
            raise ValueError(f"k: expected [B, T, H, K], got shape {list(k.shape)} (DLA-9.1)")
        K = int(k.shape[3])
        _require_float_input("k", k, (B, T, H, K), "[B, T, H, K]")
    check_scores_source(config, k, scores, (B, T, H))
    return B, T, H, K


def check_cu_seqlens(cu_seqlens: Any, B: int, T: int) -> np.ndarray:
    """DLA-8.1, DLA-9.8: ``cu_seqlens`` is ``[N + 1]`` integers from 0 to ``T``, non-decreasing."""
    _require_array("cu_seqlens", cu_seqlens, "DLA-9.8")
    if dtype_name(cu_seqlens) not in _INT_NAMES:
        raise TypeError(
            f"cu_seqlens: expected int32 or int64, got {dtype_name(cu_seqlens)} (DLA-9.8)"
        )
    cu = np.asarray(cu_seqlens.detach().cpu().numpy() if is_torch(cu_seqlens) else cu_seqlens)
    if cu.ndim != 1 or cu.shape[0] < 2:
        raise ValueError(
            f"cu_seqlens: expected 1-D [N + 1] with N >= 1, got shape {list(cu.shape)} (DLA-9.8)"
        )
    if B != 1:
        raise ValueError(
            f"cu_seqlens: requires batch size B == 1 (packed sequences), got B = {B} (DLA-9.8)"
        )
    if cu[0] != 0 or cu[-1] != T:
        raise ValueError(
            f"cu_seqlens: must start at 0 and end at T = {T}, got {cu[0]} ... {cu[-1]} (DLA-9.8)"
        )
    if np.any(np.diff(cu) < 0):
        raise ValueError("cu_seqlens: must be non-decreasing (DLA-9.8)")
    return cu.astype(np.int64)


def check_cache(cache: Any, N: int, H: int, C: int, K: int | None, V: int | None) -> None:
    """DLA-7.1, DLA-9.9: a cache's fields have the layout of the spec and consistent values."""
    if not isinstance(cache, Cache):
        raise TypeError(f"initial_cache: expected dla.Cache, got {type(cache).__name__} (DLA-9.9)")
    for f in ("states", "info", "prev_key"):
        _require_array(f"initial_cache.{f}", getattr(cache, f), "DLA-9.9")
        _require_float(f"initial_cache.{f}", getattr(cache, f), "DLA-9.3, DLA-9.9")
        _require_finite(f"initial_cache.{f}", getattr(cache, f))
    for f in ("starts", "labels", "count", "position"):
        _require_int(f"initial_cache.{f}", getattr(cache, f), "DLA-9.9")
    st = cache.states
    if st.ndim != 5 or tuple(st.shape[:3]) != (N, H, C):
        raise ValueError(
            f"initial_cache.states: expected [N, H, C, K, V] with N, H, C = {N}, {H}, {C}, "
            f"got {list(st.shape)} (DLA-9.9)"
        )
    if (K is not None and st.shape[3] != K) or (V is not None and st.shape[4] != V):
        raise ValueError(
            f"initial_cache.states: K, V must be {K}, {V}, got {list(st.shape[3:])} (DLA-9.9)"
        )
    Kc = int(st.shape[3])
    for f, shape, layout in (
        ("info", (N, H, C), "[N, H, C]"),
        ("starts", (N, H, C), "[N, H, C]"),
        ("labels", (N, H, C), "[N, H, C]"),
        ("count", (N, H), "[N, H]"),
        ("prev_key", (N, H, Kc), "[N, H, K]"),
        ("position", (N,), "[N]"),
    ):
        _require_shape(f"initial_cache.{f}", getattr(cache, f), shape, layout, "DLA-9.9")
    cnt, pos = _host(cache.count), _host(cache.position)
    if np.any(cnt < 0) or np.any(cnt > C):
        raise ValueError(f"initial_cache.count: must lie in [0, C = {C}] (DLA-9.9)")
    if np.any(pos < 0) or np.any((cnt == 0) != (pos[:, None] == 0)):
        raise ValueError(
            "initial_cache.position: must be >= 0, and 0 exactly when count == 0 (DLA-9.9)"
        )
    starts = _host(cache.starts)
    _check_slots("initial_cache", starts, _host(cache.labels), cnt, "DLA-9.9")
    if np.any(starts >= pos[:, None, None]):
        raise ValueError("initial_cache.starts: every start must be < position (DLA-9.9)")
    info = _host(cache.info)
    if np.any(info < 0):
        raise ValueError(
            "initial_cache.info: information is a sum of scores, so >= 0 (DLA-3.2, DLA-9.9)"
        )
    unused = np.arange(C) >= cnt[..., None]  # [N, H, C]
    if np.any(info[unused] != 0) or np.any(_host(cache.states)[unused] != 0):
        raise ValueError(
            "initial_cache.states: slots >= count must hold zeros in states and info "
            "(DLA-7.1, DLA-7.4, DLA-9.9)"
        )
    if np.any(_host(cache.prev_key)[pos == 0] != 0):
        raise ValueError(
            "initial_cache.prev_key: must be zeros where position == 0 (DLA-7.1, DLA-7.4, DLA-9.9)"
        )


def check_plan(plan: Any, B: int, T: int, H: int, C: int) -> None:
    """DLA-6.1, DLA-6.2, DLA-9.10: an injected plan has the spec's layout and slot rules."""
    if not isinstance(plan, Plan):
        raise TypeError(f"plan: expected dla.Plan, got {type(plan).__name__} (DLA-9.10)")
    for f, shape, layout in (
        ("boundary", (B, T, H), "[B, T, H]"),
        ("count", (B, T, H), "[B, T, H]"),
        ("starts", (B, T, H, C), "[B, T, H, C]"),
        ("labels", (B, T, H, C), "[B, T, H, C]"),
    ):
        x = getattr(plan, f)
        _require_array(f"plan.{f}", x, "DLA-9.10")
        _require_shape(f"plan.{f}", x, shape, layout, "DLA-9.10")
        if f == "boundary" and dtype_name(x) != "bool":
            raise TypeError(
                f"plan.boundary: expected bool, got {dtype_name(x)} (DLA-6.1, DLA-9.10)"
            )
        if f != "boundary":
            _require_int(f"plan.{f}", x, "DLA-6.1, DLA-9.10")
    cnt = _host(plan.count)
    if T and (cnt.min() < 1 or cnt.max() > C):
        raise ValueError(
            f"plan.count: must lie in [1, C = {C}] at every readout (DLA-3.6, DLA-9.10)"
        )
    _check_slots("plan", _host(plan.starts), _host(plan.labels), cnt, "DLA-3.6, DLA-9.10")


def check_plan_coarsens(starts: np.ndarray, count: np.ndarray, starts0: np.ndarray,
                        count0: np.ndarray, position0: np.ndarray) -> None:
    """DLA-3.6, DLA-9.10: from one readout to the next a plan only coarsens, plus the new token.

    Row form (NumPy): ``starts [R, T, C]``, ``count [R, T]`` for one sequence
    of each row, continuing ``starts0 [R, C]``, ``count0 [R]`` at ``position0
    [R]`` tokens. Every used start at ``t`` is a used start at ``t - 1`` or the
    position of token ``t`` itself.
    """
    _, T, C = starts.shape
    prev_starts = np.concatenate([starts0[:, None], starts[:, :-1]], axis=1)  # [R, T, C]
    prev_count = np.concatenate([count0[:, None], count[:, :-1]], axis=1)
    prev_used = np.arange(C) < prev_count[..., None]
    used = np.arange(C) < count[..., None]
    pos = position0[:, None] + np.arange(T)  # [R, T]
    kept = ((starts[..., :, None] == prev_starts[..., None, :]) & prev_used[..., None, :]).any(-1)
    ok = ~used | kept | (starts == pos[..., None])
    if not ok.all():
        r, t = (int(i) for i in np.argwhere(~ok.all(-1))[0])
        raise ValueError(
            f"plan.starts: at row {r}, position {int(pos[r, t])} a state starts where none started "
            "before; a plan may only merge states and open one at the current token "
            "(DLA-3.6, DLA-9.10)"
        )


def check_fenwick_capacity(capacity: int, position0: Any, lengths: Any) -> None:
    """DLA-4.2, DLA-9.11: under ``fenwick`` position ``p`` needs ``capacity >= bit_length(p) + 1``.

    ``position0`` and ``lengths`` (broadcastable integer arrays) give, per row
    or sequence, the first position and the number of tokens; the message
    names the first position that needs more and the capacity it needs.
    """
    limit = 1 << (capacity - 1)  # the first position with bit_length(p) + 1 > capacity
    p0 = np.asarray(position0, np.int64)
    n = np.broadcast_to(np.asarray(lengths, np.int64), p0.shape)
    over = (n > 0) & (p0 + n - 1 >= limit)
    if over.any():
        first = int(np.maximum(p0[over], limit).min())
        raise ValueError(
            f"capacity: the fenwick policy needs capacity >= {first.bit_length() + 1} to reach "
            f"position {first}, got {capacity} (DLA-4.2, DLA-9.11)"
        )


# ----------------------------------------------------------------- whole calls
@dataclass(frozen=True)
class Call:
    """A validated call (DLA-9): its sizes and the token range of each sequence (DLA-8.1).

    Without ``cu_seqlens`` every batch row is one sequence of length ``T``
    (``segments == ((0, T),)`` and cache row ``n`` is batch row ``n``); with it,
    ``B == 1`` and sequence ``n`` is ``segments[n]`` with cache row ``n``.
    """

    B: int
    T: int
    H: int
    K: int | None
    V: int | None
    C: int
    segments: tuple[tuple[int, int], ...]
    packed: bool

    @property
    def N(self) -> int:
        """Number of sequences, i.e. rows of the cache (DLA-7.1)."""
        return len(self.segments) if self.packed else self.B

    @property
    def lengths(self) -> tuple[int, ...]:
        """The length of each sequence, in cache-row order (DLA-8.1)."""
        return tuple(b - a for a, b in self.segments) if self.packed else (self.T,) * self.B

    def cache_rows(self, i: int) -> slice:
        """The cache rows of segment ``i``: its own row when packed, every batch row otherwise."""
        return slice(i, i + 1) if self.packed else slice(0, self.B)


def _segments(cu: np.ndarray | None, T: int) -> tuple[tuple[int, int], ...]:
    if cu is None:
        return ((0, T),)
    return tuple((int(a), int(b)) for a, b in itertools.pairwise(cu))


def _check_sequences(call: Call, config: Config, initial_cache: Any) -> None:
    """DLA-7.1, DLA-9.9 and DLA-9.11 for every sequence of ``call``."""
    if initial_cache is not None:
        check_cache(initial_cache, call.N, call.H, call.C, call.K, call.V)
    if config.policy == "fenwick":
        pos0 = (np.zeros(call.N, np.int64) if initial_cache is None
                else _host(initial_cache.position).astype(np.int64))
        check_fenwick_capacity(call.C, pos0, call.lengths)


def _plan_rows(x: np.ndarray) -> np.ndarray:
    """``[B, T, H, ...] -> [B * H, T, ...]``."""
    return np.moveaxis(x, 2, 1).reshape(x.shape[0] * x.shape[2], x.shape[1], *x.shape[3:])


def _check_plan_continues_cache(plan: Plan, call: Call, initial_cache: Any) -> None:
    """DLA-6.4, DLA-9.10: in every sequence, an injected plan coarsens from its carried cache."""
    starts = _plan_rows(_host(plan.starts).astype(np.int64))
    count = _plan_rows(_host(plan.count).astype(np.int64))
    H, C = call.H, call.C
    for i, (a, b) in enumerate(call.segments):
        n = call.cache_rows(i)  # plan rows: every (batch row, head); packed, B == 1: the heads
        if initial_cache is None:
            R = (n.stop - n.start) * H
            starts0, count0, pos0 = np.full((R, C), -1), np.zeros(R, np.int64), np.zeros(R)
        else:
            starts0 = _host(initial_cache.starts)[n].astype(np.int64).reshape(-1, C)
            count0 = _host(initial_cache.count)[n].astype(np.int64).reshape(-1)
            pos0 = np.repeat(_host(initial_cache.position)[n].astype(np.int64), H)
        check_plan_coarsens(starts[:, a:b], count[:, a:b], starts0, count0,
                            pos0.astype(np.int64))


def device_name(x: Any) -> str:
    """``"cpu"`` for NumPy arrays, the device type (``"cuda"``, ...) of a torch tensor."""
    return str(x.device.type) if is_torch(x) else "cpu"


def refuse_unsupported(claims: Any, config: Config, call: Call, *, dtype: str | None, device: str,
                       features: tuple[str, ...] = (), first: str = "q") -> None:
    """DLA-9.14, DLA-11.6: refuse a call outside ``claims`` (a ``CLAIMS`` mapping or a
    resolved ``dla.claims.Claims``) with the error the spec requires, naming the argument
    (``first``: the array that carries the sizes, ``q``, or ``k`` / ``scores`` in a plan call)."""
    import dataclasses

    from dla.claims import Needs, resolve

    resolved = resolve(claims)
    sizes = {"B": call.B, "T": call.T, "H": call.H}
    if call.K is not None:
        sizes["K"] = call.K
    if call.V is not None:
        sizes["V"] = call.V
    needs = Needs(config=config, sizes=sizes, features=frozenset(features))
    why = resolved.unsupported(needs, dtype=dtype, device=device)
    if why is not None:
        if why.argument == "q" and first != "q":
            why = dataclasses.replace(why, argument=first)
        raise why.error(why.message())


def require_own_plan(plan: Any, own: Any) -> None:
    """DLA-9.14 for ``CLAIMS["plans"] = "own"``: an injected plan must equal the plan the
    implementation's own ``make_plan`` makes for the call; any other is refused by name."""
    if not plan.equals(own):
        raise ValueError("plan: this implementation executes only the plan its own make_plan "
                         "makes for the call (CLAIMS['plans'] is 'own'); not supported by "
                         "this implementation (DLA-11.2)")


def check_forward_call(
    q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config, *, kind: str, beta: Any = None,
    scores: Any = None, plan: Any = None, initial_cache: Any = None, cu_seqlens: Any = None,
    output_final_cache: bool = False, claims: Any = None,
) -> Call:
    """DLA-9, DLA-11.7: every rule on one ``forward`` call, in one order for every implementation.

    ``kind`` is the implementation's array kind (``"numpy"`` or ``"torch"``).
    With ``claims`` (the implementation's ``CLAIMS``), a call outside them is
    refused as DLA-9.14 requires: ``TypeError`` for an unsupported dtype or
    device, ``ValueError`` citing DLA-11.2 for anything else.
    """
    check_config(config)
    check_array_kind({"q": q, "k": k, "v": v, "g": g, "lam": lam, "beta": beta,
                      "scores": scores, "cu_seqlens": cu_seqlens}, kind)
    if claims is not None:
        _require_array("q", q)
        _require_float("q", q)
    d = check_forward_inputs(q, k, v, g, lam, config, beta, scores)
    cu = None if cu_seqlens is None else check_cu_seqlens(cu_seqlens, d.B, d.T)
    call = Call(d.B, d.T, d.H, d.K, d.V, d.C, _segments(cu, d.T), cu is not None)
    if claims is not None:
        features = tuple(f for f, used in (
            ("streaming", initial_cache is not None or output_final_cache),
            ("varlen", cu is not None)) if used)
        refuse_unsupported(claims, config, call, dtype=dtype_name(q), device=device_name(q),
                           features=features)
    _check_sequences(call, config, initial_cache)
    if plan is not None:
        check_plan(plan, d.B, d.T, d.H, d.C)
        _check_plan_continues_cache(plan, call, initial_cache)
    return call


def check_plan_call(config: Config, *, kind: str, k: Any = None, scores: Any = None,
                    initial_cache: Any = None, cu_seqlens: Any = None,
                    claims: Any = None) -> Call:
    """DLA-9, DLA-11.7: every rule on one ``make_plan`` call (``V`` is ``None``: no values are
    given); with ``claims``, refusals outside them as in :func:`check_forward_call`."""
    check_config(config)
    check_array_kind({"k": k, "scores": scores, "cu_seqlens": cu_seqlens}, kind)
    B, T, H, K = check_plan_inputs(config, k, scores)
    cu = None if cu_seqlens is None else check_cu_seqlens(cu_seqlens, B, T)
    call = Call(B, T, H, K, None, config.capacity, _segments(cu, T), cu is not None)
    if claims is not None:
        src = scores if config.score == "external" else k
        features = tuple(f for f, used in (("streaming", initial_cache is not None),
                                           ("varlen", cu is not None)) if used)
        # External scores may come in float32 or float64 whatever the compute dtype (DLA-1.3),
        # so only keys say which compute dtype a plan call is in.
        dtype = dtype_name(k) if config.score == "key_cosine" else None
        refuse_unsupported(claims, config, call, dtype=dtype, device=device_name(src),
                           features=features, first="k" if dtype else "scores")
    _check_sequences(call, config, initial_cache)
    return call
