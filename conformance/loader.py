"""Loading an implementation and resolving its claims (spec DLA-11.1, DLA-11.2).

An implementation is named by a registered name (``dla.impls.REGISTRY``),
by ``"module:attribute"`` (the attribute may be a module, a class instance or
any object with ``forward`` and ``make_plan``; a dotted attribute path is
followed), by a bare module path, or given as an object.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass
from typing import Any

from dla.claims import DTYPES, LEVELS, Claims, ClaimsError, resolve

__all__ = ["ALL_LEVELS", "ALWAYS_LEVELS", "DTYPES", "LEVELS", "LoadError", "LoadedImpl", "load",
           "resolve_claims"]

#: Levels that run for every implementation whether claimed or not (DLA-12.8 to DLA-12.10).
ALWAYS_LEVELS = ("properties", "claims", "robustness")
ALL_LEVELS = LEVELS + ALWAYS_LEVELS


class LoadError(ValueError):
    """An implementation could not be found or does not have the interface of DLA-11.1."""


@dataclass(frozen=True)
class LoadedImpl:
    """An implementation, the name it was loaded under and its resolved claims."""

    name: str
    obj: Any
    claims: Claims
    by_name: bool = True  # loaded from a string the command line can repeat


def _where(exc: BaseException, module: str) -> str:
    """``file:line`` of an import failure: the syntax error's, or the deepest frame in a
    file of the project being imported (the adapter's own code, not importlib's)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename and "/conformance/loader" not in
           f.filename.replace("\\", "/")]
    if not own:
        return module
    f = own[-1]
    return f"{f.filename}:{f.lineno}"


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise LoadError(f"impl: cannot import module {module!r} ({what}): {exc}") from None
        raise LoadError(f"impl: importing {module!r} ({what}) failed at {_where(exc, module)}: "
                        f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # a SyntaxError or any error raised while the module runs
        raise LoadError(f"impl: importing {module!r} ({what}) failed at {_where(exc, module)}: "
                        f"{type(exc).__name__}: {exc}") from None


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
            raise LoadError(f"impl: importing {spec!r} failed at {_where(exc, spec)}: "
                            f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise LoadError(f"impl: importing {spec!r} failed at {_where(exc, spec)}: "
                        f"{type(exc).__name__}: {exc}") from None
    raise LoadError(
        f"impl: {spec!r} is neither a registered name {sorted(REGISTRY)}, an importable module, "
        "nor 'module:attribute'"
    )


def resolve_claims(obj: Any) -> Claims:
    """DLA-11.2: the implementation's ``CLAIMS`` completed with the defaults, validated."""
    try:
        return resolve(getattr(obj, "CLAIMS", None))
    except ClaimsError as exc:
        raise LoadError(str(exc)) from None


def _check_interface(obj: Any, name: str) -> None:
    missing = [m for m in ("forward", "make_plan") if not callable(getattr(obj, m, None))]
    if missing:
        raise LoadError(
            f"impl: {name!r} lacks {', '.join(missing)}; an implementation needs callable "
            "forward and make_plan (DLA-11.1)"
        )


def _describe(obj: Any) -> str:
    return getattr(obj, "__name__", None) or getattr(obj, "NAME", None) or type(obj).__name__


def origin_of(loaded: LoadedImpl) -> tuple[str | None, str | None]:
    """The file an implementation was loaded from, and the ``sys.path`` entry that found it
    when that is not an installed location (so a report can say how to find it again)."""
    import inspect
    import sys

    obj = loaded.obj
    module = obj if inspect.ismodule(obj) else sys.modules.get(getattr(type(obj), "__module__",
                                                                       ""))
    path = getattr(module, "__file__", None)
    if path is None:
        return None, None
    path = os.path.abspath(path)
    installed = ("site-packages" in path or "dist-packages" in path
                 or _is_package_file(path))
    if installed:
        return path, None
    name = getattr(module, "__name__", "")
    root = os.path.dirname(path)
    for _ in range(name.count(".") + (1 if os.path.basename(path) == "__init__.py" else 0)):
        root = os.path.dirname(root)
    return path, root


def _is_package_file(path: str) -> bool:
    """A file of this package itself (its registered implementations, its broken variants)."""
    import dla

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(dla.__file__)))
    return path.startswith(pkg + os.sep) and "/examples/" not in path.replace("\\", "/")


def load(impl: Any) -> LoadedImpl:
    """Load ``impl`` (a registered name, ``"module:attr"``, a module path, or an object)."""
    if isinstance(impl, LoadedImpl):
        return impl
    if isinstance(impl, str):
        obj, name = _resolve_string(impl), impl
    else:
        obj, name = impl, _describe(impl)
    _check_interface(obj, name)
    return LoadedImpl(name=name, obj=obj, claims=resolve_claims(obj),
                      by_name=isinstance(impl, str))
