"""Run the Triton kernels under Triton's CPU interpreter when no CUDA GPU is present.

``TRITON_INTERPRET=1`` must be set before ``triton.jit`` wraps the kernels, so it
is set here, when pytest collects this folder. If ``dla.impls.triton_gpu`` was
already imported by an earlier test module (compiled mode), its modules are
reloaded so that their kernels become interpreted functions.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
MODULES = (  # dependency order
    "dla.impls.triton_gpu.rows",
    "dla.impls.triton_gpu.plan_kernel",
    "dla.impls.triton_gpu.forward_kernels",
    "dla.impls.triton_gpu.checks",
    "dla.impls.triton_gpu.backward_kernels",
    "dla.impls.triton_gpu.api",
    "dla.impls.triton_gpu.autograd",
    "dla.impls.triton_gpu",
)

if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
    for name in MODULES:
        if name in sys.modules:
            importlib.reload(sys.modules[name])


@pytest.fixture
def device() -> str:
    """Where the kernels run: the GPU, or the CPU under the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"
