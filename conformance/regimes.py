"""The regimes where implementations take other paths (spec DLA-12.11), named in one place.

A kernel that is right on tidy inputs can be wrong where it branches: a second
tile of ``V``, a planner for many rows, the tail of a chunk, a cumulative
decay that overflows when computed the short way, a key norm whose square
underflows, a score one unit in the last place above ``tau``. Each
:class:`Regime` names one such place, the clauses it puts under stress and its
sizes per profile; every level draws its generated cases from these regimes
(``Check.regime``), and a report lists the regimes that ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from dla.conformance.inputs import Shape


@dataclass(frozen=True)
class Regime:
    """Where kernels branch, what breaks there, and the case sizes per profile."""

    name: str
    description: str
    clauses: tuple[str, ...]
    ci: Shape | None = None
    thorough: Shape | None = None

    def shape(self, profile: str) -> Shape:
        s = self.thorough if profile == "thorough" else self.ci
        if s is None:
            raise ValueError(f"regime {self.name!r} has no sizes of its own")
        return s


_REGIMES = (
    Regime("small", "the profile's main shape (a few rows, K, V <= 16)", ("DLA-1.1",)),
    Regime("wide_heads", "K and V across the tile widths 64 and 128, and K != V (a second or "
           "partial tile, a scale taken from the wrong dimension)", ("DLA-5.3",),
           Shape(B=1, T=40, H=1, K=96, V=160), Shape(B=1, T=72, H=2, K=256, V=200)),
    Regime("many_rows", "more than 32 rows (B * H), where row-parallel planners switch paths",
           ("DLA-1.1", "DLA-3.3"),
           Shape(B=5, T=12, H=7, K=4, V=4), Shape(B=8, T=40, H=16, K=4, V=4)),
    Regime("chunk_edges", "lengths one below, at and one above the chunk sizes 16, 32, 64, 128 "
           "and the powers of two (a chunk tail, a new Fenwick level)", ("DLA-4.1", "DLA-5.6"),
           Shape(B=1, T=129, H=1, K=4, V=4), Shape(B=2, T=257, H=2, K=8, V=8)),
    Regime("long_strong_decay", "long sequences with strong decay: cumulative log decay in the "
           "thousands, where exp(G_t) * exp(-G_s) overflows and float32 sums drift",
           ("DLA-5.1", "DLA-5.6"),
           Shape(B=1, T=400, H=2, K=8, V=8), Shape(B=1, T=2500, H=2, K=16, V=16)),
    Regime("gradients_across_chunks", "backward over several chunks: gradients through the "
           "carried inter-chunk states", ("DLA-10.5", "DLA-10.7")),
    Regime("delta_non_unit_keys", "delta base with key norms in [0.5, 1.15], so a kernel that "
           "normalises keys inside differs", ("DLA-5.2",)),
    Regime("repeated_keys", "repeated, power-of-two scaled and negated keys: scores exactly 0 "
           "and 2, so tau = 0 and exact merge ties decide", ("DLA-2.1", "DLA-2.6"),
           Shape(B=2, T=40, H=2, K=16, V=4), Shape(B=2, T=96, H=3, K=64, V=4)),
    Regime("extreme_key_norms", "keys with entries near the dtype's smallest normal and largest "
           "finite numbers, whose squares underflow or overflow", ("DLA-2.2", "DLA-2.6"),
           Shape(B=2, T=32, H=2, K=8, V=4), Shape(B=2, T=80, H=3, K=32, V=4)),
    Regime("threshold_ulp", "external scores equal to tau and one unit in the last place on "
           "either side of it, in the scores' dtype", ("DLA-3.1", "DLA-3.8"),
           Shape(B=2, T=32, H=2, K=4, V=4), Shape(B=3, T=96, H=3, K=4, V=4)),
    Regime("bit_exact_information", "float64 scores (multiples of 0.1) whose merge costs tie "
           "exactly in the summation order of DLA-3.2 and not in another", ("DLA-3.2", "DLA-3.9"),
           Shape(B=1, T=40, H=4, K=4, V=4), Shape(B=2, T=80, H=4, K=4, V=4)),
    Regime("empty_sequences", "T = 0 calls and empty packed sequences", ("DLA-1.1", "DLA-8.1")),
    Regime("decode_chain", "hundreds of one-token calls carrying the cache, as inference runs",
           ("DLA-7.2",)),
)

REGIMES: dict[str, Regime] = {r.name: r for r in _REGIMES}


def regime(name: str) -> Regime:
    try:
        return REGIMES[name]
    except KeyError:
        raise ValueError(f"regime: unknown {name!r}; known: {sorted(REGIMES)}") from None
