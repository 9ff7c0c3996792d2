"""One calling convention for every implementation (spec DLA-11.1).

:class:`Adapter` takes NumPy inputs (float64 for floats) and NumPy ``Plan`` /
``Cache`` objects, converts them to the implementation's array kind
(``CLAIMS["array"]``), dtype and device, calls it, and converts the results
back: ``o`` as float64 NumPy, plans and caches with NumPy fields (integer
fields int64, ``boundary`` bool, cache float fields float64). Torch is
imported only when the implementation takes torch tensors, so the reference
path works without torch.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from dla.arrays import is_torch
from dla.cache import Cache
from dla.claims import Claims
from dla.config import Config
from dla.conformance.loader import LoadedImpl, load
from dla.plan import Plan
from dla.reference.validation import dtype_name

FLOAT_INPUTS = ("q", "k", "v", "g", "lam", "beta", "scores")
_CACHE_FLOAT = ("states", "info", "prev_key")
_PLAN_BOOL = ("boundary",)
_BOOL = ("bool",)
_INTS = ("int32", "int64")
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def _require_dtype(name: str, x: Any, allowed: tuple[str, ...], clause: str) -> None:
    """A returned field has the kind its clause requires: no float plan passes as integers."""
    got = dtype_name(x) if hasattr(x, "dtype") else type(x).__name__
    if got not in allowed:
        raise TypeError(f"{name}: the implementation returned {got}, expected one of "
                        f"{allowed} ({clause})")
_NUMPY_DTYPES = ("float16", "float32", "float64")


class Adapter:
    """Wraps an implementation so the suite can call it with NumPy float64 inputs.

    ``dtype`` is the compute dtype the float inputs are cast to; caches are
    given in that dtype, or float32 for float16/bfloat16 (states accumulate
    in at least float32, DLA-1.3). ``cu_seqlens`` is given as int64 unless
    the implementation's claims say ``"cu_seqlens_dtype": "int32"``.
    """

    def __init__(self, impl: Any, dtype: str = "float64", device: str = "cpu") -> None:
        self.loaded: LoadedImpl = load(impl)
        self.impl = self.loaded.obj
        self.name = self.loaded.name
        self.claims: Claims = self.loaded.claims
        self.array: str = self.claims.array
        self.dtype = dtype
        self.device = device
        if self.array == "numpy" and dtype not in _NUMPY_DTYPES:
            raise ValueError(
                f"dtype: a NumPy implementation cannot take {dtype!r}; use one of {_NUMPY_DTYPES}")
        if self.array == "numpy" and device != "cpu":
            raise ValueError(f"device: a NumPy implementation runs on 'cpu' only, got {device!r}")
        self.cache_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, dtype={self.dtype!r}, device={self.device!r})"

    # ------------------------------------------------------------ conversions
    def to_impl(self, x: Any, dtype: str | None = None) -> Any:
        """``x`` as the implementation's array kind, in ``dtype`` (default: the compute dtype)."""
        if x is None:
            return None
        dtype = dtype or self.dtype
        if self.array == "numpy":
            return np.asarray(x).astype(dtype, copy=True)
        import torch

        t = torch.as_tensor(np.ascontiguousarray(x))
        return t.to(device=self.device, dtype=getattr(torch, dtype))

    @staticmethod
    def to_numpy(x: Any, dtype: str | None = "float64") -> np.ndarray:
        """Any array or tensor as NumPy (cast to ``dtype`` unless ``None``)."""
        from dla.arrays import as_numpy

        a = as_numpy(x)
        return np.array(a, dtype=dtype) if dtype is not None else np.array(a)

    def plan_to_impl(self, plan: Plan | None) -> Plan | None:
        if plan is None:
            return None
        return Plan(**{f.name: self.to_impl(getattr(plan, f.name),
                                            "bool" if f.name in _PLAN_BOOL else "int64")
                       for f in fields(Plan)})

    def plan_to_numpy(self, plan: Plan) -> Plan:
        if not isinstance(plan, Plan):
            raise TypeError(f"make_plan of {self.name!r} returned {type(plan).__name__}, "
                            "not dla.Plan (DLA-11.1)")
        for f in fields(Plan):
            self.require_own_kind(f"plan.{f.name}", getattr(plan, f.name))
            _require_dtype(f"plan.{f.name}", getattr(plan, f.name),
                           _BOOL if f.name in _PLAN_BOOL else _INTS, "DLA-6.1")
        return Plan(**{f.name: self.to_numpy(getattr(plan, f.name),
                                             "bool" if f.name in _PLAN_BOOL else "int64")
                       for f in fields(Plan)})

    def cache_to_impl(self, cache: Cache | None) -> Cache | None:
        if cache is None:
            return None
        def dtype(name: str) -> str:
            return self.cache_dtype if name in _CACHE_FLOAT else "int64"

        return Cache(**{f.name: self.to_impl(getattr(cache, f.name), dtype(f.name))
                        for f in fields(Cache)})

    def cache_to_numpy(self, cache: Cache | None) -> Cache | None:
        if cache is None:
            return None
        if not isinstance(cache, Cache):
            raise TypeError(f"forward of {self.name!r} returned {type(cache).__name__} "
                            "as cache, not dla.Cache (DLA-7.1)")
        for f in fields(Cache):
            self.require_own_kind(f"cache.{f.name}", getattr(cache, f.name))
            _require_dtype(f"cache.{f.name}", getattr(cache, f.name),
                           _FLOATS if f.name in _CACHE_FLOAT else _INTS, "DLA-7.1")
        return Cache(**{f.name: self.to_numpy(getattr(cache, f.name),
                                              "float64" if f.name in _CACHE_FLOAT else "int64")
                        for f in fields(Cache)})

    def cu_to_impl(self, cu: Any) -> Any:
        if cu is None:
            return None
        return self.to_impl(np.asarray(cu), self.claims.cu_seqlens_dtype)

    # ------------------------------------------------------------ what comes back
    def require_own_kind(self, name: str, x: Any) -> None:
        """DLA-11.1: a returned array is of the implementation's kind and on its device."""
        if self.array == "numpy":
            if not isinstance(x, np.ndarray):
                raise TypeError(f"{name}: {self.name} claims array 'numpy' but returned "
                                f"{type(x).__module__}.{type(x).__name__} (DLA-11.1)")
            return
        if not is_torch(x):
            raise TypeError(f"{name}: {self.name} claims array 'torch' but returned "
                            f"{type(x).__module__}.{type(x).__name__} (DLA-11.1)")
        if x.device.type != self.device.split(":")[0]:
            raise TypeError(f"{name}: returned on device {x.device.type!r}, the inputs were on "
                            f"{self.device!r} (DLA-11.1)")

    # ------------------------------------------------------------ calls
    def convert_forward_args(self, q: Any, k: Any, v: Any, g: Any, lam: Any,
                             kw: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of ``forward`` in the implementation's kind."""
        args = [self.to_impl(x) for x in (q, k, v, g, lam)]
        out = dict(kw)
        for name in ("beta", "scores"):
            if out.get(name) is not None:
                out[name] = self.to_impl(out[name])
        if "plan" in out:
            out["plan"] = self.plan_to_impl(out["plan"])
        if "initial_cache" in out:
            out["initial_cache"] = self.cache_to_impl(out["initial_cache"])
        if "cu_seqlens" in out:
            out["cu_seqlens"] = self.cu_to_impl(out["cu_seqlens"])
        return args, out

    def forward(self, q: Any, k: Any, v: Any, g: Any, lam: Any, config: Config,
                **kw: Any) -> tuple[np.ndarray, Cache | None]:
        """DLA-11.1 ``forward`` with NumPy in and out (``o`` float64)."""
        args, kwargs = self.convert_forward_args(q, k, v, g, lam, kw)
        return self.finish_forward(self.impl.forward(*args, config, **kwargs), kwargs)

    def finish_forward(self, result: Any, kwargs: dict[str, Any]
                       ) -> tuple[np.ndarray, Cache | None]:
        """What ``forward`` returned, checked (DLA-1.6, DLA-11.1) and as NumPy."""
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"forward of {self.name!r} must return (o, final_cache_or_None) (DLA-11.1)")
        o, cache = result
        self.require_own_kind("o", o)
        _require_dtype("o", o, _FLOATS, "DLA-11.1")
        if kwargs.get("output_final_cache") and cache is None:
            raise TypeError(f"forward of {self.name!r} returned no final cache although "
                            "output_final_cache=True (DLA-7.1, DLA-11.1)")
        if not kwargs.get("output_final_cache") and cache is not None:
            raise TypeError(f"forward of {self.name!r} returned a cache although "
                            "output_final_cache=False (DLA-11.1)")
        return self.to_numpy(o), self.cache_to_numpy(cache)

    def convert_plan_args(self, kw: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``make_plan`` in the implementation's kind."""
        kwargs = dict(kw)
        for name in ("k", "scores"):
            if kwargs.get(name) is not None:
                kwargs[name] = self.to_impl(kwargs[name])
        if "initial_cache" in kwargs:
            kwargs["initial_cache"] = self.cache_to_impl(kwargs["initial_cache"])
        if "cu_seqlens" in kwargs:
            kwargs["cu_seqlens"] = self.cu_to_impl(kwargs["cu_seqlens"])
        return kwargs

    def make_plan(self, config: Config, **kw: Any) -> Plan:
        """DLA-11.1 ``make_plan`` with NumPy in and out."""
        return self.plan_to_numpy(self.impl.make_plan(config, **self.convert_plan_args(kw)))
