"""Optimized DLA implementations, each certified against :mod:`dla.reference`.

Every implementation is a module exposing ``forward`` and ``make_plan`` with
the signatures of spec clause DLA-11.1, and a ``CLAIMS`` mapping (DLA-11.2).
``REGISTRY`` maps the names the conformance command line accepts to modules.
"""

REGISTRY = {
    "reference": "dla.reference",
    "torch_cpu": "dla.impls.torch_cpu",
    "triton_gpu": "dla.impls.triton_gpu",
}
