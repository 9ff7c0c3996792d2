"""Levels fed by the other parts of the suite: ``golden`` fixtures and ``properties``.

Both modules are imported lazily; if one is missing, its level reports a
failure ("not available") instead of crashing the run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from dla.cache import Cache
from dla.conformance.checks import Check, Context
from dla.conformance.diagnose import decision_context
from dla.conformance.inputs import quantize
from dla.conformance.report import ClauseResult
from dla.conformance.tolerance import (
    Comparison,
    compare,
    compare_cache,
    compare_error,
    compare_plan,
)
from dla.plan import Plan

_FORWARD_KW = ("beta", "scores", "cu_seqlens")


def _unavailable(level: str, clause: str, what: str, exc: BaseException) -> list[Check]:
    message = f"{what} not available: {type(exc).__name__}: {exc}"
    return [
        Check(
            level, clause, f"{level} available", lambda: Comparison(False, level, message=message)
        )
    ]


# ------------------------------------------------------------------ golden
def _dyadic(x: np.ndarray, denom: int = 64, top: float = 64.0) -> bool:
    return bool(np.all(x * denom == np.round(x * denom)) and np.all(np.abs(x) <= top))


def _exact_in(x: np.ndarray, dtype: str) -> bool:
    return bool(np.array_equal(quantize(np.asarray(x, np.float64), dtype), x))


def decisions_safe(case: Any, ctx: Context) -> bool:
    """Whether the case's plan cannot flip in the context's dtype (DLA-10.3): dyadic external
    scores; external scores the dtype represents exactly when no merge can happen (boundaries
    compare exactly, DLA-3.8); or margins above the dtype's bound."""
    scores = case.inputs.get("scores")
    if case.config.score == "external" and scores is not None:
        scores = np.asarray(scores)
        if _dyadic(scores):
            return True
        if (_exact_in(scores, ctx.dtype) and case.config.policy == "dla"
                and case.config.capacity >= scores.shape[1]):
            return True
    return float(case.min_margin) > ctx.margin_bound


def representable(case: Any, dtype: str) -> bool:
    """Every float input of a valid case stays finite in ``dtype`` (keys scaled by 2^100 do
    not fit float16): the case applies to that dtype."""
    with np.errstate(over="ignore"):
        return all(bool(np.isfinite(quantize(np.asarray(x, np.float64), dtype)).all())
                   for x in case.inputs.values()
                   if isinstance(x, np.ndarray) and x.dtype.kind == "f")


def _valid(ctx: Context, case: Any) -> list[Comparison]:
    inputs = {n: np.asarray(x) for n, x in case.inputs.items()}
    args = [inputs[n] for n in ("q", "k", "v", "g", "lam")]
    kw = {n: inputs[n] for n in _FORWARD_KW if n in inputs}
    safe = decisions_safe(case, ctx)
    injected = getattr(case, "plan", None)
    note = ""
    if injected is not None:
        kw["plan"] = injected
    elif not safe and case.expected_plan is not None:
        kw["plan"] = case.expected_plan
        note = f"margin {case.min_margin:.3g} <= {ctx.margin_bound:g}, plan injected"
    comps: list[Comparison] = []
    o, cache = ctx.adapter.forward(
        *args,
        case.config,
        initial_cache=case.initial_cache,
        output_final_cache=bool(case.output_final_cache),
        **kw,
    )
    if case.expected_o is not None:
        comps.append(compare(o, case.expected_o, ctx.dtype))
    if case.expected_cache is not None:
        if cache is None:
            comps.append(Comparison(False, "cache", message="no final cache returned (DLA-7.1)"))
        else:
            comps.append(compare_cache(cache, case.expected_cache, ctx.dtype))
    if case.expected_plan is not None and safe:
        pkw = {n: inputs[n] for n in ("scores", "cu_seqlens") if n in inputs}
        if case.config.score == "key_cosine":
            pkw["k"] = inputs["k"]
        plan = ctx.adapter.make_plan(case.config, initial_cache=case.initial_cache, **pkw)
        why = decision_context(case.config, initial_cache=case.initial_cache, **pkw)
        comps.append(compare_plan(plan, case.expected_plan, why, case.config.policy))
    if not comps:
        comps.append(Comparison(False, "golden", message="the case has nothing to compare"))
    return [c.noted(note) for c in comps]



def _raw(ctx: Context, x: Any, cast: bool, float_dtype: str) -> Any:
    """An invalid case's argument in the implementation's kind, its dtype kept unless ``cast``."""
    if isinstance(x, (Cache, Plan)):
        cd = ctx.adapter.cache_dtype
        return type(x)(**{f: _raw(ctx, getattr(x, f), cast, cd) for f in x.__dataclass_fields__})
    if not isinstance(x, np.ndarray):
        return x
    dtype = float_dtype if cast and x.dtype == np.float64 else None
    if ctx.adapter.array == "numpy":
        return x.astype(dtype) if dtype else x
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x)).to(ctx.device)
    return t.to(getattr(torch, dtype)) if dtype else t


def _invalid(ctx: Context, case: Any) -> Comparison:
    """The implementation must raise the named exception type (DLA-9)."""
    inputs = dict(case.inputs)
    floats = [x for x in inputs.values() if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
    cast = all(x.dtype == np.float64 for x in floats)  # a case mixing dtypes is passed as it is
    conv = {n: _raw(ctx, x, cast, ctx.dtype) for n, x in inputs.items()}
    args = [conv.get(n) for n in ("q", "k", "v", "g", "lam")]
    kw = {n: conv[n] for n in _FORWARD_KW if n in conv}
    cache = None if case.initial_cache is None else _raw(ctx, case.initial_cache, cast, ctx.dtype)
    if getattr(case, "plan", None) is not None:
        kw["plan"] = _raw(ctx, case.plan, False, ctx.dtype)
    expected = case.error or "ValueError"
    argument = (case.manifest.get("error") or {}).get("argument")
    try:
        ctx.adapter.impl.forward(
            *args,
            case.config,
            initial_cache=cache,
            output_final_cache=bool(case.output_final_cache),
            **kw,
        )
    except Exception as exc:
        return compare_error(exc, expected, argument)
    return compare_error(None, expected, argument)


def _case_needs(case: Any) -> tuple[dict[str, int], tuple[str, ...]]:
    """The sizes and features (streaming, varlen) a case requires of an implementation."""
    shapes = case.manifest.get("shapes") or {}
    sizes = {n: int(shapes[n]) for n in ("B", "T", "H", "K", "V") if n in shapes}
    features = tuple(lv for lv in case.levels if lv in ("streaming", "varlen"))
    return sizes, features


def _golden_check(ctx: Context, case: Any, level: str = "golden") -> Check:
    clause = ", ".join(case.clauses)
    if case.kind == "invalid":
        run: Callable[[], Any] = lambda: _invalid(ctx, case)  # noqa: E731
    else:
        run = lambda: _valid(ctx, case)  # noqa: E731
    target = (getattr(case, "target", "") or (case.error_clause if case.kind == "invalid" else "")
              or clause.split(",")[0])
    cited = ", ".join([target, *(c for c in (x.strip() for x in clause.split(",")) if c != target)])
    sizes, features = _case_needs(case)
    check = ctx.check(level, cited or "DLA-10.2", f"{case.kind} {case.name}", run,
                      config=case.config, features=features)
    return replace(check, needs=replace(check.needs, sizes=sizes))


_CASES: dict[str, list[Any]] = {}


def _load_cases() -> list[Any]:
    """The packaged golden cases, read (and checksummed) once per process."""
    golden = importlib.import_module("dla.conformance.golden")
    key = str(golden.default_dir())
    if key not in _CASES:
        _CASES[key] = list(golden.iter_cases())
    return _CASES[key]


def _golden_cases(level: str) -> tuple[list[Any], list[Check]]:
    """The fixture cases, or the failed check that says why there are none."""
    try:
        cases = _load_cases()
    except Exception as exc:  # missing module or fixtures: a failure of this level only
        return [], _unavailable(level, "DLA-10.2", "golden fixtures (dla.conformance.golden)", exc)
    if not cases:
        return [], _unavailable(level, "DLA-10.2", "golden fixtures", LookupError("no cases found"))
    return cases, []


def _invalid_for(ctx: Context, case: Any, level: str) -> Check:
    """DLA-12.8: an invalid case, moved to a claimed configuration when it lies outside."""
    check = _golden_check(ctx, case, level)
    if ctx.claims.unsupported(check.needs, dtype=ctx.dtype, device=ctx.device) is None:
        return check
    from dla.conformance.golden import retarget

    moved = retarget(case.name, ctx.claims)
    return check if moved is None else _golden_check(ctx, moved, level)


def golden_checks(ctx: Context) -> list[Check]:
    cases, failed = _golden_cases("golden")
    return failed + [_invalid_for(ctx, c, "golden") if c.kind == "invalid"
                     else _golden_check(ctx, c) for c in cases
                     if c.kind == "invalid" or representable(c, ctx.dtype)]


def invalid_input_checks(ctx: Context) -> list[Check]:
    """DLA-9, DLA-12.8: the invalid golden cases, run for every implementation.

    An implementation that does not claim ``golden`` is still held to the error
    rules; one that does meets these cases in its golden level instead. A case
    whose configuration the implementation does not claim is moved to one it
    does (:func:`dla.conformance.golden.retarget`), so a single-policy or
    capacity-limited kernel faces every rule that applies to it.
    """
    if "golden" in ctx.claims.levels:
        return []
    cases, failed = _golden_cases("properties")
    return failed + [_invalid_for(ctx, c, "properties") for c in cases if c.kind == "invalid"]


# ------------------------------------------------------------------ properties
def property_checks(ctx: Context) -> list[Check]:
    """One check per applicable property (DLA-12.8), then the invalid cases if golden is not
    claimed: each property is its own item, so pytest-xdist can spread them."""
    try:
        props = importlib.import_module("dla.conformance.properties")
        applicable = props.applicable(ctx.adapter)
    except Exception as exc:
        return _unavailable(
            "properties", "DLA-12.8", "property checks (dla.conformance.properties)", exc
        )

    def run(prop: Any) -> ClauseResult:
        return props.run_property(prop, ctx.adapter, ctx.profile.name, ctx.seed)

    # Each property result cites its own clause; run_check adds this level's (DLA-12.8).
    checks = [ctx.check("properties", p.clause, p.check, partial(run, p)) for p in applicable]
    return [*checks, *invalid_input_checks(ctx)]
