"""What an implementation supports: the ``CLAIMS`` protocol of spec DLA-11.2 and DLA-11.6.

An implementation module (or object) may define ``CLAIMS``, a mapping with
the keys below; every key is optional and the defaults are those of an
implementation of the whole specification in float32 on the CPU with torch
tensors. :func:`resolve` turns the mapping into a :class:`Claims`, and
:meth:`Claims.unsupported` answers, for one call, which claim it falls outside
of. The same object serves the conformance suite (which generates every check
inside the claims and probes what lies outside) and the implementation itself
(``dla.reference.validation.check_forward_call(..., claims=CLAIMS)`` refuses
what is not claimed with the error form of DLA-11.2).

============== ================================================================
key            value (default)
============== ================================================================
levels         conformance levels certified, from :data:`LEVELS`
               (``("plan", "execute", "end_to_end")``)
dtypes         compute dtypes, a tuple, or a mapping ``device -> tuple``
               (``("float32",)``)
devices        ``("cpu",)``, ``("cuda",)`` ... (``("cpu",)``)
array          ``"numpy"`` or ``"torch"`` (``"torch"``)
bases          from ``("gla", "delta")`` (both)
policies       from ``("dla", "fenwick")`` (both)
scores         score sources, from ``("key_cosine", "external")`` (both)
plans          ``"any"``: ``forward`` executes any well-formed injected plan
               (DLA-6.2); ``"own"``: only the plan its own ``make_plan`` makes
               for the call, others are refused (``"any"``)
sizes          mapping from ``"B"``, ``"T"``, ``"H"``, ``"K"``, ``"V"``, ``"C"``
               (capacity) to a rule ``{"min": int, "max": int,
               "multiple_of": int, "power_of_two": bool}`` (no limits)
determinism    ``"bitwise"``: repeated identical calls give identical results;
               or a float, the relative RMS bound they stay within (``"bitwise"``)
cu_seqlens_dtype  ``"int32"`` or ``"int64"`` (``"int64"``)
============== ================================================================

The protocol is DLA-11.6 of the spec; refusals outside the claims follow DLA-9.14.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dla.config import BASES, POLICIES, SCORES, Config

#: Levels an implementation may claim (DLA-12).
LEVELS = ("plan", "execute", "end_to_end", "streaming", "varlen", "gradients", "golden")
#: The recognised floating dtypes (DLA-1.3).
DTYPES = ("float16", "bfloat16", "float32", "float64")
ARRAYS = ("numpy", "torch")
PLANS = ("any", "own")
SIZE_NAMES = ("B", "T", "H", "K", "V", "C")
#: What a size limit is about, for messages: the argument that carries it.
SIZE_ARGUMENT = {"B": "q", "T": "q", "H": "q", "K": "q", "V": "v", "C": "capacity"}

DEFAULTS: dict[str, Any] = {
    "levels": ("plan", "execute", "end_to_end"),
    "dtypes": ("float32",),
    "devices": ("cpu",),
    "array": "torch",
    "bases": BASES,
    "policies": POLICIES,
    "scores": SCORES,
    "plans": "any",
    "sizes": {},
    "determinism": "bitwise",
    "cu_seqlens_dtype": "int64",
}

#: Features a call or a check may need beyond its configuration and sizes.
FEATURES = ("streaming", "varlen", "foreign_plan")


class ClaimsError(ValueError):
    """``CLAIMS`` is malformed (unknown key, wrong value)."""


@dataclass(frozen=True)
class SizeRule:
    """The values one size may take: ``min <= n <= max``, a multiple, a power of two."""

    min: int = 0
    max: int | None = None
    multiple_of: int = 1
    power_of_two: bool = False

    def allows(self, n: int) -> bool:
        return (n >= self.min and (self.max is None or n <= self.max)
                and n % self.multiple_of == 0
                and (not self.power_of_two or (n > 0 and n & (n - 1) == 0)))

    def fit(self, n: int) -> int | None:
        """The allowed value nearest to ``n`` (ties: the larger), or ``None`` if there is none."""
        if self.allows(n):
            return n
        hi = self.max if self.max is not None else max(n, self.min) * 4 + self.multiple_of * 4
        candidates = [m for m in _candidates(self, n, hi) if self.allows(m)]
        return min(candidates, key=lambda m: (abs(m - n), -m)) if candidates else None

    def describe(self) -> str:
        parts = []
        if self.min:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        if self.multiple_of > 1:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.power_of_two:
            parts.append("a power of two")
        return ", ".join(parts) or "any"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": self.min}
        if self.max is not None:
            out["max"] = self.max
        if self.multiple_of > 1:
            out["multiple_of"] = self.multiple_of
        if self.power_of_two:
            out["power_of_two"] = True
        return out


def _candidates(rule: SizeRule, n: int, hi: int) -> Iterable[int]:
    lo = max(rule.min, 0)
    if rule.power_of_two:
        p = 1
        while p <= hi:
            if p >= lo:
                yield p
            p *= 2
        return
    m = rule.multiple_of
    below = (min(n, hi) // m) * m
    for x in (below, below + m, lo + (-lo) % m, (hi // m) * m):
        if lo <= x <= hi:
            yield x


@dataclass(frozen=True)
class Unsupported:
    """Why a call lies outside the claims: the argument to name and the claim it breaks."""

    argument: str
    reason: str
    error: type[Exception] = ValueError  # TypeError for a dtype or a device (DLA-9.3)

    def message(self) -> str:
        """The refusal's message in the form of DLA-9.13 and DLA-11.2."""
        clause = "DLA-9.3, DLA-11.2" if self.error is TypeError else "DLA-11.2"
        return f"{self.argument}: {self.reason}; not supported by this implementation ({clause})"

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Needs:
    """What one call or check requires of an implementation (see :meth:`Claims.unsupported`).

    ``sizes`` maps names of :data:`SIZE_NAMES` to values; ``features`` names
    entries of :data:`FEATURES`.
    """

    config: Config | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    level: str | None = None

    def describe(self) -> str:
        bits = []
        if self.config is not None:
            c = self.config
            bits.append(f"{c.policy} {c.base} {c.score} C={c.capacity}")
        if self.sizes:
            bits.append(" ".join(f"{k}={v}" for k, v in self.sizes.items()))
        bits.extend(sorted(self.features))
        return ", ".join(bits)


@dataclass(frozen=True)
class Claims:
    """The resolved ``CLAIMS`` of an implementation (module doc); immutable."""

    levels: tuple[str, ...]
    dtypes: Mapping[str, tuple[str, ...]]  # device -> compute dtypes
    devices: tuple[str, ...]
    array: str
    bases: tuple[str, ...]
    policies: tuple[str, ...]
    scores: tuple[str, ...]
    plans: str
    sizes: Mapping[str, SizeRule]
    cu_seqlens_dtype: str
    determinism: str | float = "bitwise"

    # ------------------------------------------------------------ questions
    def dtypes_on(self, device: str) -> tuple[str, ...]:
        return self.dtypes.get(device, ())

    @property
    def all_dtypes(self) -> tuple[str, ...]:
        """Every claimed dtype on any device, in :data:`DTYPES` order."""
        got = {d for ds in self.dtypes.values() for d in ds}
        return tuple(d for d in DTYPES if d in got)

    def size_rule(self, name: str) -> SizeRule:
        return self.sizes.get(name, SizeRule())

    def unsupported(self, needs: Needs, *, dtype: str | None = None,
                    device: str | None = None) -> Unsupported | None:
        """Why ``needs`` (in ``dtype`` on ``device``) is outside the claims, or ``None``.

        The answer names the argument a refusal starts with (DLA-9.13) and the
        claim key, e.g. ``capacity: 3 is outside CLAIMS['sizes']['C'] (<= 1)``.
        """
        if device is not None and device not in self.devices:
            return Unsupported("q", f"device {device!r} is not in CLAIMS['devices'] "
                                    f"{list(self.devices)}", TypeError)
        if dtype is not None and device is not None and dtype not in self.dtypes_on(device):
            return Unsupported("q", f"dtype {dtype} is not in CLAIMS['dtypes'] on {device!r} "
                                    f"{list(self.dtypes_on(device))}", TypeError)
        if needs.level is not None and needs.level not in self.levels:
            return Unsupported(needs.level, f"level {needs.level!r} is not in CLAIMS['levels'] "
                                            f"{list(self.levels)}")
        c = needs.config
        if c is not None:
            for field_, key, value, claimed in (("base", "bases", c.base, self.bases),
                                              ("policy", "policies", c.policy, self.policies),
                                              ("score", "scores", c.score, self.scores)):
                if value not in claimed:
                    return Unsupported(f"config.{field_}", f"{value!r} is not in "
                                                         f"CLAIMS[{key!r}] {list(claimed)}")
        sizes: dict[str, int] = dict(needs.sizes)
        if c is not None:
            sizes.setdefault("C", c.capacity)
        for size_name, n in sizes.items():
            rule = self.size_rule(size_name)
            if not rule.allows(int(n)):
                what = "capacity" if size_name == "C" else f"{size_name} ="
                return Unsupported(SIZE_ARGUMENT[size_name], f"{what} {n} is outside "
                                   f"CLAIMS['sizes'][{size_name!r}] ({rule.describe()})")
        for feature in sorted(needs.features):
            if feature in ("streaming", "varlen") and feature not in self.levels:
                arg = "initial_cache" if feature == "streaming" else "cu_seqlens"
                return Unsupported(arg, f"{feature} is not in CLAIMS['levels'] "
                                        f"{list(self.levels)}")
            if feature == "foreign_plan" and self.plans != "any":
                return Unsupported("plan", "only the plan of its own make_plan is executed "
                                           "(CLAIMS['plans'] is 'own')")
        return None

    def fit(self, name: str, n: int) -> int | None:
        """The claimed value of size ``name`` nearest to ``n`` (``None`` if none)."""
        return self.size_rule(name).fit(n)

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "dtypes": {d: list(v) for d, v in self.dtypes.items()},
            "devices": list(self.devices),
            "array": self.array,
            "bases": list(self.bases),
            "policies": list(self.policies),
            "scores": list(self.scores),
            "plans": self.plans,
            "sizes": {k: r.to_json() for k, r in self.sizes.items()},
            "determinism": self.determinism,
            "cu_seqlens_dtype": self.cu_seqlens_dtype,
        }


# ----------------------------------------------------------------- resolving CLAIMS
def _tuple_of(key: str, value: Any, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ClaimsError(f"CLAIMS[{key!r}]: expected a tuple, got {value!r} (DLA-11.2)")
    out = tuple(value)
    if not out or (allowed is not None and not all(v in allowed for v in out)):
        raise ClaimsError(f"CLAIMS[{key!r}]: expected a non-empty tuple of {allowed}, "
                          f"got {value!r} (DLA-11.2)")
    if len(set(out)) != len(out):
        raise ClaimsError(f"CLAIMS[{key!r}]: repeated entries in {value!r} (DLA-11.2)")
    return out


def _size_rule(name: str, raw: Any) -> SizeRule:
    if not isinstance(raw, Mapping):
        raise ClaimsError(f"CLAIMS['sizes'][{name!r}]: expected a dict with keys min, max, "
                          f"multiple_of, power_of_two, got {raw!r} (DLA-11.2)")
    unknown = set(raw) - {"min", "max", "multiple_of", "power_of_two"}
    if unknown:
        raise ClaimsError(f"CLAIMS['sizes'][{name!r}]: unknown keys {sorted(unknown)} (DLA-11.2)")
    for key in ("min", "max", "multiple_of"):
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ClaimsError(f"CLAIMS['sizes'][{name!r}][{key!r}]: expected an int >= 0, "
                              f"got {v!r} (DLA-11.2)")
    floor = 0 if name == "T" else 1  # T = 0 is a valid call (DLA-1.1); other sizes are >= 1
    rule = SizeRule(min=max(raw.get("min", 0) or 0, floor), max=raw.get("max"),
                    multiple_of=raw.get("multiple_of", 1) or 1,
                    power_of_two=bool(raw.get("power_of_two", False)))
    if rule.fit(rule.min) is None:
        raise ClaimsError(f"CLAIMS['sizes'][{name!r}]: no size satisfies {rule.describe()} "
                          "(DLA-11.2)")
    return rule


def _dtypes(raw: Any, devices: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if isinstance(raw, Mapping):
        extra = set(raw) - set(devices)
        if extra:
            raise ClaimsError(f"CLAIMS['dtypes']: devices {sorted(extra)} are not in "
                              f"CLAIMS['devices'] {list(devices)} (DLA-11.2)")
        return {d: _tuple_of(f"dtypes'][{d!r}", raw.get(d, ()), DTYPES) for d in devices}
    claimed = _tuple_of("dtypes", raw, DTYPES)
    return {d: claimed for d in devices}


def resolve(raw: Mapping[str, Any] | None) -> Claims:
    """DLA-11.2: ``CLAIMS`` completed with the defaults and checked; :class:`ClaimsError` if not."""
    if raw is None:
        raw = {}
    if isinstance(raw, Claims):
        return raw
    if not isinstance(raw, Mapping):
        raise ClaimsError(f"CLAIMS: expected a dict, got {type(raw).__name__} (DLA-11.2)")
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ClaimsError(f"CLAIMS: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)} "
                          "(DLA-11.2)")
    c = {**DEFAULTS, **raw}
    devices = _tuple_of("devices", c["devices"], None)
    if c["array"] not in ARRAYS:
        raise ClaimsError(f"CLAIMS['array']: expected one of {ARRAYS}, got {c['array']!r}")
    if c["plans"] not in PLANS:
        raise ClaimsError(f"CLAIMS['plans']: expected one of {PLANS}, got {c['plans']!r}")
    if c["cu_seqlens_dtype"] not in ("int32", "int64"):
        raise ClaimsError("CLAIMS['cu_seqlens_dtype']: expected 'int32' or 'int64', "
                          f"got {c['cu_seqlens_dtype']!r}")
    det = c["determinism"]
    if det != "bitwise" and (isinstance(det, bool) or not isinstance(det, (int, float))
                             or not 0 <= det < 1):
        raise ClaimsError(f"CLAIMS['determinism']: expected 'bitwise' or a relative RMS bound "
                          f"in [0, 1), got {det!r} (DLA-1.9)")
    sizes = c["sizes"]
    if not isinstance(sizes, Mapping) or set(sizes) - set(SIZE_NAMES):
        raise ClaimsError(f"CLAIMS['sizes']: expected a dict keyed by {SIZE_NAMES}, "
                          f"got {sizes!r} (DLA-11.2)")
    return Claims(
        levels=_tuple_of("levels", c["levels"], LEVELS),
        dtypes=_dtypes(c["dtypes"], devices),
        devices=devices,
        array=c["array"],
        bases=_tuple_of("bases", c["bases"], BASES),
        policies=_tuple_of("policies", c["policies"], POLICIES),
        scores=_tuple_of("scores", c["scores"], SCORES),
        plans=c["plans"],
        sizes={n: _size_rule(n, r) for n, r in sizes.items()},
        cu_seqlens_dtype=c["cu_seqlens_dtype"],
        determinism=det if det == "bitwise" else float(det),
    )
