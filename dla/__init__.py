"""Dynamic Linear Attention (DLA-v1): executable specification and conformance suite.

The normative text is ``spec/SPEC.md``. This package holds the types every
implementation shares (:class:`Config`, :class:`Plan`, :class:`Cache`); the
float64 reference lives in :mod:`dla.reference`, optimized implementations in
:mod:`dla.impls`, and the certification engine in :mod:`dla.conformance`.
"""

from dla.cache import Cache
from dla.config import BASES, POLICIES, SCORES, Config
from dla.plan import Plan

SPEC_VERSION = "DLA-v1.1"
__version__ = "0.1.0"

__all__ = ["BASES", "POLICIES", "SCORES", "SPEC_VERSION", "Cache", "Config", "Plan", "__version__"]
