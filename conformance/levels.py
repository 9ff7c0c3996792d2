"""The conformance levels (DESIGN section 4, spec DLA-11.2) and how a run is assembled.

Each claimed level is certified separately, in each claimed dtype and on
each claimed device; ``properties`` runs for every implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from dla.conformance import (
    level_external,
    level_gradients,
    level_numeric,
    level_plan,
    level_streaming,
    level_varlen,
)
from dla.conformance.adapter import Adapter
from dla.conformance.checks import Check, Context, get_profile
from dla.conformance.loader import ALL_LEVELS, ALWAYS_LEVELS, DTYPES, LEVELS, LoadedImpl

LEVEL_CHECKS: dict[str, Callable[[Context], list[Check]]] = {
    "plan": level_plan.checks,
    "execute": level_numeric.execute_checks,
    "end_to_end": level_numeric.end_to_end_checks,
    "streaming": level_streaming.streaming_checks,
    "varlen": level_varlen.varlen_checks,
    "gradients": level_gradients.checks,
    "golden": level_external.golden_checks,
    "properties": level_external.property_checks,
}
assert tuple(LEVEL_CHECKS) == ALL_LEVELS


#: The clause of section 12 that defines each level; every check of a level cites it too.
LEVEL_CLAUSE = {
    "plan": "DLA-12.1",
    "execute": "DLA-12.2",
    "end_to_end": "DLA-12.3",
    "streaming": "DLA-12.4",
    "varlen": "DLA-12.5",
    "gradients": "DLA-12.6",
    "golden": "DLA-12.7",
    "properties": "DLA-12.8",
}


def _cite_level(check: Check) -> Check:
    clause = LEVEL_CLAUSE[check.level]
    if clause in check.clause.replace(" ", "").split(","):
        return check
    return replace(check, clause=f"{check.clause}, {clause}" if check.clause else clause)


def resolve_levels(levels: Sequence[str] | str | None, claims: dict[str, Any]) -> list[str]:
    """The levels to run: the claimed ones plus ``properties``, or the ones asked for."""
    if levels is None:
        wanted = [lv for lv in LEVELS if lv in claims["levels"]] + list(ALWAYS_LEVELS)
    else:
        wanted = [levels] if isinstance(levels, str) else list(levels)
    unknown = [lv for lv in wanted if lv not in ALL_LEVELS]
    if unknown:
        raise ValueError(f"levels: unknown {unknown}; known: {list(ALL_LEVELS)}")
    return [lv for lv in ALL_LEVELS if lv in wanted]


def _as_list(value: Sequence[str] | str | None, claimed: Sequence[str]) -> list[str]:
    if value is None:
        return list(claimed)
    return [value] if isinstance(value, str) else list(value)


def collect(
    loaded: LoadedImpl,
    levels: list[str],
    dtypes: Sequence[str] | str | None,
    devices: Sequence[str] | str | None,
    profile: str,
    seed: int,
) -> tuple[list[str], list[str], list[tuple[Context, Check]]]:
    """Every (context, check) of a run, listed without running anything."""
    prof = get_profile(profile)
    dts = _as_list(dtypes, loaded.claims["dtypes"])
    unknown = [d for d in dts if d not in DTYPES]
    if unknown:
        raise ValueError(f"dtype: unknown {unknown}; the tolerance model covers {list(DTYPES)}")
    dvs = _as_list(devices, loaded.claims["devices"])
    out: list[tuple[Context, Check]] = []
    for device in dvs:
        for dtype in dts:
            ctx = Context(Adapter(loaded, dtype, device), prof, seed)
            for level in levels:
                out.extend((ctx, _cite_level(c)) for c in LEVEL_CHECKS[level](ctx))
    return dts, dvs, out
