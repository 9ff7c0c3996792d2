"""The tolerance model (spec section DLA-10): the one place where "close enough" is defined.

An output ``o`` of an implementation passes against the float64 reference
``r`` when both hold (DLA-10.2):

- the relative RMS error ``||o - r||_2 / max(||r||_2, 1e-30) <= rms[dtype]``;
- at every position ``(b, t, h)``: ``max_v |o - r| <= atol + rtol * scale(b, t, h)``,
  where ``scale = max(max_v |r[b, t, h, :]|, rms of r[b, :, h, :])``,

so one wrong token or one wrong head cannot hide in an average. Plans and
the integer fields of a cache are compared exactly (DLA-6.2, DLA-7.2).
Gradients are compared by relative RMS against central finite differences
of the float64 reference with the plan frozen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from dla.cache import Cache
from dla.plan import PLAN_FIELDS, Plan

_TINY = 1e-30


@dataclass(frozen=True)
class Tolerance:
    """DLA-10.1: the bounds of one dtype."""

    rms: float
    rtol: float
    atol: float


TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rms=1e-10, rtol=1e-8, atol=1e-12),
    "float32": Tolerance(rms=3e-5, rtol=3e-4, atol=1e-6),
    "float16": Tolerance(rms=5e-3, rtol=3e-2, atol=1e-3),
    "bfloat16": Tolerance(rms=2e-2, rtol=1e-1, atol=1e-2),
}

#: Gradients of an implementation vs finite differences of the float64 reference (relative RMS).
GRADIENT_RMS: dict[str, float] = {"float64": 1e-6, "float32": 2e-3, "float16": 5e-3,
                                  "bfloat16": 2e-2}

#: Smallest decision margin (DLA-6.3) of the inputs used by end-to-end checks, per dtype
#: (DLA-10.3): far above the rounding error of scores computed in that dtype.
MARGIN_BOUND: dict[str, float] = {
    "float64": 1e-6,
    "float32": 1e-3,
    "float16": 2e-2,
    "bfloat16": 5e-2,
}

CACHE_FLOAT_FIELDS = ("states", "info", "prev_key")
CACHE_INT_FIELDS = ("starts", "labels", "count", "position")


def _div(num: float | None, den: float | None) -> float:
    if not num:
        return 0.0
    return float(num) / float(den) if den else float("inf")


def bound_ratio(
    error: float | None,
    bound: float | None,
    rel_rms: float | None = None,
    rms_bound: float | None = None,
) -> float:
    """The larger of ``error / bound`` and ``rel_rms / rms_bound`` (0 where nothing differs)."""
    return max(_div(error, bound), _div(rel_rms, rms_bound))


def tolerance_for(dtype: str) -> Tolerance:
    """The tolerance of ``dtype``; a clear error for a dtype the model does not cover."""
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype: no tolerance for {dtype!r}; known: {sorted(TOLERANCES)} (DLA-10.1)"
        ) from None


@dataclass(frozen=True)
class Comparison:
    """The outcome of one comparison, with the worst position so a failure says where.

    ``where`` is the index of the worst position (``(b, t, h)`` for outputs,
    the first differing index for exact comparisons), ``field`` the compared
    field (``"o"``, a plan or cache field), ``error`` and ``bound`` the error
    and the bound there. ``rel_rms`` is ``None`` for exact comparisons.
    """

    passed: bool
    field: str
    rel_rms: float | None = None
    rms_bound: float | None = None
    where: tuple[int, ...] | None = None
    error: float = 0.0
    bound: float = 0.0
    message: str = ""
    extra: dict[str, Any] = dc_field(default_factory=dict)
    first: tuple[int, ...] | None = None  # the earliest failing position (readout order)
    clause: str = ""  # the clause a failure points at, when the comparison can tell

    def noted(self, note: str) -> Comparison:
        """The same comparison with ``note`` in front of its message (which case it was)."""
        return replace(self, message=f"{note}: {self.message}") if note else self

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON; ``extra`` (values at the failing positions, the
        per-readout error profile, plan rows, decision context) is merged in."""
        return {
            "field": self.field,
            "rel_rms": self.rel_rms,
            "rms_bound": self.rms_bound,
            "where": None if self.where is None else list(self.where),
            "first": None if self.first is None else list(self.first),
            "error": self.error,
            "bound": self.bound,
            "message": self.message,
            **self.extra,
        }

    def __str__(self) -> str:
        return self.message

    @property
    def ratio(self) -> float:
        """How close to failing: the larger of error / bound and rel_rms / rms_bound (> 1 fails)."""
        return bound_ratio(self.error, self.bound, self.rel_rms, self.rms_bound)

    def with_note(self, note: str) -> Comparison:
        """The same comparison with ``note`` in front of its message (e.g. the inputs' margin)."""
        return replace(self, message=f"{note}: {self.message}" if note else self.message)


def _fail_shape(name: str, a: np.ndarray, e: np.ndarray) -> Comparison:
    msg = f"{name}: shape {list(a.shape)} != expected {list(e.shape)}"
    return Comparison(False, name, message=msg, error=float("inf"))


def compare(
    actual: Any,
    expected: Any,
    dtype: str,
    *,
    name: str = "o",
    group_axes: tuple[int, ...] | None = None,
) -> Comparison:
    """DLA-10.2: compare an output ``[..., V]`` with the float64 reference.

    Positions are all indices but the last axis. ``group_axes`` are the axes
    over which the RMS scale of a position is taken (default for a
    ``[B, T, H, V]`` output: ``(1, 3)``, i.e. ``rms of r[b, :, h, :]``; for
    other ranks the whole array).
    """
    tol = tolerance_for(dtype)
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return _fail_shape(name, a, e)
    if e.size == 0:
        return Comparison(True, name, 0.0, tol.rms, message=f"{name}: empty, equal shapes")
    if not np.all(np.isfinite(a)):
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0][:-1])
        return Comparison(
            False,
            name,
            float("inf"),
            tol.rms,
            where,
            float("inf"),
            0.0,
            f"{name}: non-finite value at {where}",
            first=where,
        )
    if e.ndim == 0:
        a, e = a.reshape(1, 1), e.reshape(1, 1)
    elif e.ndim == 1:
        a, e = a.reshape(-1, 1), e.reshape(-1, 1)
    diff = np.abs(a - e)
    rel_rms = _relative_norm(diff, e)
    bound = _position_bounds(e, tol, group_axes)
    err = np.max(diff, axis=-1)
    ratio = err / bound
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    w_err, w_bound = float(err[worst]), float(bound[worst])
    passed = rel_rms <= tol.rms and bool(np.all(err <= bound))
    where = tuple(int(i) for i in worst)
    first = None if passed else _earliest(err > bound, e.ndim if name == "o" else 0) or where
    msg = (
        f"{name}: rel_rms {rel_rms:.3g} (bound {tol.rms:.3g}); worst at {where}: "
        f"{w_err:.3g} (bound {w_bound:.3g})"
    )
    if first is not None and first != where:
        msg += (f"; earliest failing at {first}: {float(err[first]):.3g} "
                f"(bound {float(bound[first]):.3g})")
    extra = {} if passed else _failure_extra(a, e, ratio, where, first, readouts=name == "o")
    return Comparison(passed, name, rel_rms, tol.rms, where, w_err, w_bound, msg, extra, first)


def _norm(x: np.ndarray) -> float:
    """The Euclidean norm, computed without overflow for entries near the float64 limit."""
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return m * float(np.linalg.norm(x / m)) if m > 0 and np.isfinite(m) else float(
        np.linalg.norm(x))


def _relative_norm(diff: np.ndarray, ref: np.ndarray) -> float:
    """``||diff|| / max(||ref||, 1e-30)``, robust to huge entries (DLA-10.2)."""
    return _norm(diff) / max(_norm(ref), _TINY)


def _position_bounds(e: np.ndarray, tol: Tolerance,
                     group_axes: tuple[int, ...] | None) -> np.ndarray:
    """DLA-10.2: ``atol + rtol * scale`` at every position (all axes but the last)."""
    if group_axes is None:
        group_axes = (1, 3) if e.ndim == 4 else tuple(range(e.ndim))
    big = max(float(np.max(np.abs(e))), _TINY)  # squares of values near 1e300 overflow
    group_rms = big * np.sqrt(np.mean((e / big) ** 2, axis=group_axes, keepdims=True))
    scale = np.maximum(np.max(np.abs(e), axis=-1), np.broadcast_to(group_rms, e.shape)[..., 0])
    return tol.atol + tol.rtol * scale


def position_ratios(actual: Any, expected: Any, dtype: str) -> np.ndarray:
    """DLA-10.2's error over bound at every position of an output ``[B, T, H, V]``: ``[B, T, H]``
    (``inf`` where ``actual`` is not finite). Values above 1 fail."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    bound = _position_bounds(e, tolerance_for(dtype), None)
    with np.errstate(invalid="ignore"):
        err = np.max(np.abs(a - e), axis=-1)
    return np.where(np.isfinite(err), err / bound, np.inf)


def _earliest(bad: np.ndarray, ndim: int) -> tuple[int, ...] | None:
    """The failing position with the smallest readout index ``t`` (axis 1 of ``[B, T, H]``
    positions), then ``b``, then ``h``; index order for other ranks."""
    idx = np.argwhere(bad)
    if idx.size == 0:
        return None
    if ndim == 4:
        idx = idx[np.lexsort((idx[:, 2], idx[:, 0], idx[:, 1]))]
    return tuple(int(i) for i in idx[0])


_MAX_PROFILE = 2048


def _pooled(x: np.ndarray) -> list[float]:
    """``x`` (1-D) max-pooled to at most :data:`_MAX_PROFILE` entries."""
    n = x.shape[0]
    if n > _MAX_PROFILE:
        k = -(-n // _MAX_PROFILE)
        pad = np.full(k * _MAX_PROFILE - n, -np.inf)
        x = np.concatenate([x, pad]).reshape(-1, k).max(axis=1)
    return [float(v) for v in x]


def _values(x: np.ndarray, pos: tuple[int, ...]) -> list[float]:
    return [float(v) for v in np.asarray(x[pos]).ravel()[:8]]


def _failure_extra(a: np.ndarray, e: np.ndarray, ratio: np.ndarray, where: tuple[int, ...],
                   first: tuple[int, ...] | None, readouts: bool = True) -> dict[str, Any]:
    """What a report shows of a failed output: values at the earliest and the worst failing
    positions, and (for ``[B, T, H, V]``) the error-to-bound ratio per readout and per
    (readout, head) of the worst batch row."""
    out: dict[str, Any] = {"where_got": _values(a, where), "where_expected": _values(e, where)}
    if first is not None:
        out["first_got"] = _values(a, first)
        out["first_expected"] = _values(e, first)
    if readouts and e.ndim == 4 and e.shape[1]:
        out["readouts"] = int(e.shape[1])  # T: the profile below may be pooled into blocks
        out["ratio_by_readout"] = _pooled(ratio.max(axis=(0, 2)))
        b = where[0]
        heads = ratio[b]  # [T, H]
        out["ratio_by_readout_head"] = {"batch_row": int(b),
                                        "rows": [_pooled(heads[:, h]) for h in
                                                 range(min(heads.shape[1], 64))]}
    return out


def compare_exact(actual: Any, expected: Any, name: str) -> Comparison:
    """Exact equality (plans, integer cache fields); ``where`` is the first differing index."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        return _fail_shape(name, a, e)
    neq = a != e
    if not np.any(neq):
        return Comparison(True, name, message=f"{name}: equal")
    idx = tuple(int(i) for i in np.argwhere(neq)[0])
    n = int(np.count_nonzero(neq))
    msg = f"{name}: {n} differing entries; first at {idx}: got {a[idx]}, expected {e[idx]}"
    return Comparison(False, name, where=idx, error=float(n), bound=0.0, message=msg)


def _first_failure(comps: list[Comparison], name: str) -> Comparison:
    for c in comps:
        if not c.passed:
            return c
    return Comparison(True, name, message=f"{name}: equal")


#: The clause a plan difference points at, by policy and by the first differing field.
PLAN_FIELD_CLAUSE = {
    "dla": {"boundary": "DLA-3.1", "count": "DLA-3.4", "starts": "DLA-3.4", "labels": "DLA-3.5"},
    "fenwick": {"boundary": "DLA-4.1", "count": "DLA-4.1", "starts": "DLA-4.1",
                "labels": "DLA-4.2"},
}


def compare_plan(actual: Plan, expected: Plan,
                 context: Callable[[tuple[int, int, int]], str] | None = None,
                 policy: str | None = None) -> Comparison:
    """DLA-6.2: exact plan parity. On failure, ``where`` is the first differing ``(b, t, h)``.

    Fields are checked in the order of the position: of all differing
    positions, the earliest ``t`` (then ``b``, ``h``) is reported, with the
    first field that differs there, since later differences usually follow.
    ``context(where)`` describes the reference's decision there (the score and
    ``tau`` of a boundary, the pair costs of a merge) for the report; the
    failing row's plan, both ways, is kept for the report's picture. With
    ``policy``, a failure names the clause its first differing field points
    at (:data:`PLAN_FIELD_CLAUSE`): a wrong boundary DLA-3.1, a wrong merge
    DLA-3.4, a wrong label DLA-3.5 under ``dla``.
    """
    a, e = actual.to_numpy(), expected.to_numpy()
    best: tuple[tuple[int, ...], Comparison] | None = None
    for f in PLAN_FIELDS:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(e, f))
        c = compare_exact(x, y, f"plan.{f}")
        if c.passed:
            continue
        if x.shape != y.shape or x.ndim < 3:
            return c
        idx = np.argwhere(x != y)
        first = tuple(int(i) for i in idx[np.lexsort((idx[:, 2], idx[:, 0], idx[:, 1]))[0]])
        key = (first[1], first[0], first[2])
        if best is None or key < best[0]:
            msg = (
                f"plan.{f}: {len(idx)} differing entries; first (earliest t) at {first}: "
                f"got {_plain(x[first])}, expected {_plain(y[first])}"
            )
            best = (key, Comparison(False, f"plan.{f}", where=first, error=float(len(idx)),
                                    message=msg, first=first))
    if best is None:
        return Comparison(True, "plan", message="plan: equal")
    comp = best[1]
    assert comp.where is not None
    b, t, h = comp.where[:3]
    extra: dict[str, Any] = {"plan_row": {"b": b, "h": h, "t": t,
                                          "actual": _plan_row(a, b, h),
                                          "expected": _plan_row(e, b, h)}}
    f = comp.field.removeprefix("plan.")
    extra["first_got"] = _plain(np.asarray(getattr(a, f))[b, t, h])
    extra["first_expected"] = _plain(np.asarray(getattr(e, f))[b, t, h])
    if context is not None:
        try:
            extra["context"] = context((b, t, h))
        except Exception as exc:  # diagnosis must never hide the failure itself
            extra["context"] = f"(no context: {type(exc).__name__}: {exc})"
        comp = replace(comp, message=f"{comp.message}; {extra['context']}")
    clause = PLAN_FIELD_CLAUSE.get(policy or "", {}).get(f, "")
    return replace(comp, extra=extra, clause=clause)


def _plain(x: Any) -> Any:
    """A NumPy scalar or array as plain Python (JSON-ready)."""
    return np.asarray(x).tolist()


_MAX_PLAN_ROW = 1024


def _plan_row(p: Plan, b: int, h: int) -> dict[str, Any]:
    """Count and starts of one row ``(b, h)`` at every readout (at most the first 1024)."""
    T = min(int(p.count.shape[1]), _MAX_PLAN_ROW)
    return {"count": _plain(np.asarray(p.count)[b, :T, h]),
            "starts": _plain(np.asarray(p.starts)[b, :T, h]),
            "labels": _plain(np.asarray(p.labels)[b, :T, h])}


def compare_cache(actual: Cache, expected: Cache, dtype: str) -> Comparison:
    """DLA-7.2, DLA-10.6: float fields of a cache by tolerance, integer fields exactly.

    Positions (DLA-10.6): ``states`` per ``(n, h, slot)``, its ``K x V`` matrix the
    vector; ``info`` per ``(n, h, slot)``; ``prev_key`` per ``(n, h)``. Each field
    taken as a whole gives the RMS scale.
    """
    a, e = actual.to_numpy(), expected.to_numpy()
    comps = [compare_exact(getattr(a, f), getattr(e, f), f"cache.{f}") for f in CACHE_INT_FIELDS]
    for f in CACHE_FLOAT_FIELDS:
        x, y = np.asarray(getattr(a, f), np.float64), np.asarray(getattr(e, f), np.float64)
        if x.shape != y.shape:
            comps.append(_fail_shape(f"cache.{f}", x, y))
            continue
        if f == "states" and y.ndim == 5:
            x, y = x.reshape(*x.shape[:3], -1), y.reshape(*y.shape[:3], -1)
        elif f == "info":
            x, y = x[..., None], y[..., None]
        comps.append(compare(x, y, dtype, name=f"cache.{f}", group_axes=tuple(range(y.ndim))))
    return _first_failure(comps, "cache")


def compare_gradient(actual: Any, expected: Any, dtype: str, name: str) -> Comparison:
    """Gradients: relative RMS against central finite differences of the reference."""
    bound = GRADIENT_RMS.get(dtype)
    if bound is None:
        raise ValueError(
            f"dtype: no gradient tolerance for {dtype!r}; known: {sorted(GRADIENT_RMS)}"
        )
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return _fail_shape(name, a, e)
    diff = np.abs(a - e)
    rel = _relative_norm(diff, e)
    where = None
    w = 0.0
    if diff.size:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        w = float(diff[where])
    passed = bool(np.all(np.isfinite(a))) and rel <= bound
    msg = f"grad {name}: rel_rms {rel:.3g} (bound {bound:.3g}); largest |diff| {w:.3g} at {where}"
    extra = {"max_abs_diff": w}
    return Comparison(passed, f"grad.{name}", rel, bound, where, rel, bound, msg, extra)


_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]'\", ]*:")


def is_refusal(exc: BaseException) -> bool:
    """DLA-11.2, DLA-9.13: ``exc`` refuses a call in the required form: a ``ValueError``
    (``TypeError`` for a dtype or a device) whose message starts with the argument's name and
    cites DLA-11.2 (or DLA-9.3 for a dtype)."""
    msg = str(exc)
    if not _ARGUMENT.match(msg):
        return False
    if isinstance(exc, TypeError):
        return "DLA-11.2" in msg or "DLA-9.3" in msg
    return isinstance(exc, ValueError) and "DLA-11.2" in msg


def compare_error(exc: BaseException | None, expected: str, argument: str | None) -> Comparison:
    """DLA-10.4 with DLA-9.13: the raised error is an instance of ``expected`` (by name),
    its message starts with the offending ``argument`` and cites a clause id."""
    if exc is None:
        return Comparison(False, "error", message=f"no error raised; expected {expected}")
    got, msg = type(exc).__name__, str(exc)
    problems = []
    if not any(k.__name__ == expected for k in type(exc).__mro__):
        problems.append(f"expected {expected}")
    if argument is not None and not msg.startswith(argument):
        problems.append(f"the message must start with the argument {argument!r} (DLA-9.13)")
    if "DLA-" not in msg:
        problems.append("the message must cite the rule's clause id (DLA-9.13)")
    return Comparison(not problems, "error",
                      message=f"raised {got}: {msg}" + "".join(f"; {p}" for p in problems))
