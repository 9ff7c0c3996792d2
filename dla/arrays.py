"""Helpers that treat NumPy arrays and torch tensors alike, without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    """True for a torch tensor (checked by type name, so torch need not be installed)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def as_numpy(x: Any) -> np.ndarray:
    """A NumPy view or copy of ``x``; torch tensors are detached and moved to the host."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)
