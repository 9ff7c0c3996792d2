"""Loading an implementation and resolving its claims (spec DLA-11.1, DLA-11.2).

An implementation is named by a registered name (``dla.impls.REGISTRY``),
by ``"module:attribute"`` (the attribute may be a module, a class instance or
any object with ``forward`` and ``make_plan``; a dotted attribute path is
followed), by a bare module path, or given as an object.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dla.config import BASES, POLICIES

LEVELS = ("plan", "execute", "end_to_end", "streaming", "varlen", "gradients", "golden")
#: Levels that run for every implementation whether claimed or not.
ALWAYS_LEVELS = ("properties",)
ALL_LEVELS = LEVELS + ALWAYS_LEVELS
DTYPES = ("float16", "bfloat16", "float32", "float64")
ARRAYS = ("numpy", "torch")

DEFAULT_CLAIMS: dict[str, Any] = {
    "levels": ("plan", "execute", "end_to_end"),
    "dtypes": ("float32",),
    "devices": ("cpu",),
    "array": "torch",
    # Extensions of DLA-11.2 read by the suite: an implementation that does not
    # support a base or a policy says so here, and the suite does not test it.
    "bases": BASES,
    "policies": POLICIES,
    # The integer dtype the implementation takes ``cu_seqlens`` in.
    "cu_seqlens_dtype": "int64",
}


class LoadError(ValueError):
    """An implementation could not be found or does not have the interface of DLA-11.1."""


@dataclass(frozen=True)
class LoadedImpl:
    """An implementation, the name it was loaded under and its resolved claims."""

    name: str
    obj: Any
    claims: dict[str, Any]


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise LoadError(f"impl: cannot import module {module!r} ({what}): {exc}") from exc
        raise LoadError(f"impl: importing {module!r} ({what}) failed: {exc}") from exc


def _resolve_string(spec: str) -> Any:
    from dla.impls import REGISTRY

    if spec in REGISTRY:
        return _import(REGISTRY[spec], f"registered name {spec!r}")
    if ":" in spec:
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise LoadError(f"impl: expected 'module:attribute', got {spec!r}")
        obj = _import(module, spec)
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise LoadError(f"impl: module {module!r} has no attribute {attr!r} ({spec!r})")
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (spec == exc.name or spec.startswith(exc.name + ".")):
            raise LoadError(f"impl: importing {spec!r} failed: {exc}") from exc
    raise LoadError(
        f"impl: {spec!r} is neither a registered name {sorted(REGISTRY)}, an importable module, "
        "nor 'module:attribute'"
    )


def resolve_claims(obj: Any) -> dict[str, Any]:
    """DLA-11.2: the implementation's ``CLAIMS`` completed with the defaults, validated."""
    raw = getattr(obj, "CLAIMS", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise LoadError(f"CLAIMS: expected a dict, got {type(raw).__name__} (DLA-11.2)")
    unknown = set(raw) - set(DEFAULT_CLAIMS)
    if unknown:
        raise LoadError(f"CLAIMS: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_CLAIMS)}")
    claims = {**DEFAULT_CLAIMS, **raw}
    for key, allowed in (("levels", LEVELS), ("dtypes", DTYPES), ("bases", BASES),
                         ("policies", POLICIES)):
        value = claims[key]
        if isinstance(value, str) or not value or not all(v in allowed for v in value):
            raise LoadError(
                f"CLAIMS[{key!r}]: expected a non-empty tuple of {allowed}, got {value!r}"
            )
        claims[key] = tuple(value)
    if isinstance(claims["devices"], str) or not claims["devices"]:
        raise LoadError(f"CLAIMS['devices']: expected a non-empty tuple, got {claims['devices']!r}")
    claims["devices"] = tuple(claims["devices"])
    if claims["cu_seqlens_dtype"] not in ("int32", "int64"):
        raise LoadError("CLAIMS['cu_seqlens_dtype']: expected 'int32' or 'int64', "
                        f"got {claims['cu_seqlens_dtype']!r}")
    if claims["array"] not in ARRAYS:
        raise LoadError(f"CLAIMS['array']: expected one of {ARRAYS}, got {claims['array']!r}")
    return claims


def _check_interface(obj: Any, name: str) -> None:
    missing = [m for m in ("forward", "make_plan") if not callable(getattr(obj, m, None))]
    if missing:
        raise LoadError(
            f"impl: {name!r} lacks {', '.join(missing)}; an implementation needs callable "
            "forward and make_plan (DLA-11.1)"
        )


def _describe(obj: Any) -> str:
    return getattr(obj, "__name__", None) or getattr(obj, "NAME", None) or type(obj).__name__


def load(impl: Any) -> LoadedImpl:
    """Load ``impl`` (a registered name, ``"module:attr"``, a module path, or an object)."""
    if isinstance(impl, LoadedImpl):
        return impl
    if isinstance(impl, str):
        obj, name = _resolve_string(impl), impl
    else:
        obj, name = impl, _describe(impl)
    _check_interface(obj, name)
    return LoadedImpl(name=name, obj=obj, claims=resolve_claims(obj))
