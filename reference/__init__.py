"""The float64 NumPy reference of DLA-v1 (``spec/SPEC.md``), written to be read.

- :mod:`dla.reference.scores`: token scores (DLA-2)
- :mod:`dla.reference.policies`: the ``dla`` and ``fenwick`` plan policies (DLA-3, DLA-4)
- :mod:`dla.reference.recurrent`: the recurrent executor, both bases (DLA-5)
- :mod:`dla.reference.masked`: the masked form of the ``gla`` base (DLA-5.4)
- :mod:`dla.reference.api`: ``make_plan`` / ``forward``, caches and varlen (DLA-7, DLA-8, DLA-11)
- :mod:`dla.reference.validation`: the error rules every implementation shares (DLA-9)
"""

from dla.reference.api import Margins, empty_cache, forward, make_plan, plan_with_margins

CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "streaming", "varlen", "golden"),
    "dtypes": ("float32", "float64"),
    "devices": ("cpu",),
    "array": "numpy",
}

__all__ = ["CLAIMS", "Margins", "empty_cache", "forward", "make_plan", "plan_with_margins"]
