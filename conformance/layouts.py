"""Memory layouts the robustness level passes inputs in (spec DLA-1.8, DLA-12.10).

Every layout returns a *view* with the values of the given array, for NumPy
arrays and torch tensors alike:

- ``canary``: a view into a buffer padded on every axis (one element before,
  two after: before and after the rows, the tokens, the heads, past the last
  dimension, spare trailing levels of ``lam``), the padding filled with NaN
  (floats) or an out-of-range integer, so any read outside the view shows;
- ``transposed``: ``[B, H, T, ...]`` storage viewed as ``[B, T, H, ...]``;
- ``strided``: every other element of the last axis of a buffer twice as wide
  (the other elements are canaries too);
- ``offset``: a contiguous view that starts 5 elements into its storage;
- ``broadcast``: a stride-0 expansion (only where the values repeat, see
  :func:`broadcastable`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dla.arrays import is_torch

LAYOUTS = ("canary", "transposed", "strided", "offset")


def _fill(x: Any) -> Any:
    """What fills the bytes outside a view: NaN, or an integer far out of every range."""
    name = str(x.dtype).removeprefix("torch.")
    if name.startswith(("float", "bfloat")):
        return float("nan")
    if name == "bool":
        return True
    return 2**30 if name == "int32" else 2**40


def _empty(x: Any, shape: tuple[int, ...]) -> Any:
    if is_torch(x):
        import torch

        return torch.full(shape, _fill(x), dtype=x.dtype, device=x.device)
    return np.full(shape, _fill(x), dtype=x.dtype)


def canary(x: Any) -> Any:
    """``x`` as a view into a buffer padded by 1 before and 2 after on every axis."""
    big = _empty(x, tuple(n + 3 for n in x.shape))
    index = tuple(slice(1, 1 + n) for n in x.shape)
    big[index] = x
    return big[index]


def transposed(x: Any) -> Any:
    """``x [B, T, H, ...]`` stored as ``[B, H, T, ...]`` (the layout of many kernels)."""
    if x.ndim < 3:
        return x
    order = (0, 2, 1, *range(3, x.ndim))
    if is_torch(x):
        return x.permute(*order).contiguous().permute(*order)
    return np.ascontiguousarray(x.transpose(order)).transpose(order)


def strided(x: Any) -> Any:
    """``x`` as every other element of the last axis of a buffer twice as wide."""
    if x.ndim == 0:
        return x
    big = _empty(x, (*x.shape[:-1], 2 * x.shape[-1]))
    big[..., ::2] = x
    return big[..., ::2]


def offset(x: Any) -> Any:
    """``x``, contiguous, starting 5 elements into its storage."""
    n = int(np.prod(x.shape))
    flat = _empty(x, (n + 5,))
    view = flat[5:].reshape(x.shape)
    view[...] = x
    return view


ARRANGE = {"canary": canary, "transposed": transposed, "strided": strided, "offset": offset}


def arrange(x: Any, layout: str) -> Any:
    """``x`` in ``layout`` (``None`` stays ``None``)."""
    return None if x is None else ARRANGE[layout](x)


def broadcast(x: Any, axis: int) -> Any:
    """``x`` (constant along ``axis``) as a stride-0 expansion of its first slice there."""
    if is_torch(x):
        return x.narrow(axis, 0, 1).expand(*x.shape)
    return np.broadcast_to(np.take(x, [0], axis=axis), x.shape)


def is_view_of_larger_storage(x: Any) -> bool:
    """Whether ``x`` is a view whose storage holds more than it (NumPy ``base``, torch storage)."""
    if is_torch(x):
        return x.untyped_storage().nbytes() > x.numel() * x.element_size()
    return x.base is not None and x.base.nbytes > x.nbytes
