"""The conformance levels (DESIGN section 4, spec DLA-11.2) and how a run is assembled.

Each claimed level is certified separately, in each claimed dtype and on
each claimed device; ``properties`` runs for every implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from dla.claims import Claims
from dla.conformance import (
    level_claims,
    level_external,
    level_gradients,
    level_numeric,
    level_plan,
    level_robustness,
    level_streaming,
    level_varlen,
)
from dla.conformance.adapter import Adapter
from dla.conformance.checks import Check, Context, get_profile
from dla.conformance.loader import ALL_LEVELS, ALWAYS_LEVELS, DTYPES, LEVELS, LoadedImpl
from dla.conformance.tolerance import Comparison

LEVEL_CHECKS: dict[str, Callable[[Context], list[Check]]] = {
    "plan": level_plan.checks,
    "execute": level_numeric.execute_checks,
    "end_to_end": level_numeric.end_to_end_checks,
    "streaming": level_streaming.streaming_checks,
    "varlen": level_varlen.varlen_checks,
    "gradients": level_gradients.checks,
    "golden": level_external.golden_checks,
    "properties": level_external.property_checks,
    "claims": level_claims.claims_checks,
    "robustness": level_robustness.robustness_checks,
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
    "claims": "DLA-12.9",
    "robustness": "DLA-12.10",
}


def _cite_level(check: Check) -> Check:
    clause = LEVEL_CLAUSE[check.level]
    if clause in check.clause.replace(" ", "").split(","):
        return check
    return replace(check, clause=f"{check.clause}, {clause}" if check.clause else clause)


def _listed(level: str, ctx: Context) -> list[Check]:
    """The checks of ``level``; if listing them fails, one failed check that says so (a bug of
    the suite must not pass as a certification, nor stop the other levels)."""
    try:
        return LEVEL_CHECKS[level](ctx)
    except Exception as exc:
        message = f"listing the {level} checks failed: {type(exc).__name__}: {exc}"

        def fail() -> Comparison:
            return Comparison(False, level, message=message)

        return [Check(level, LEVEL_CLAUSE[level], f"{level} checks listed", fail)]


def resolve_levels(levels: Sequence[str] | str | None, claims: Claims) -> list[str]:
    """The levels to run: the claimed ones plus the always-run ones, or exactly those asked for."""
    if levels is None:
        wanted = [lv for lv in LEVELS if lv in claims.levels] + list(ALWAYS_LEVELS)
    else:
        wanted = [levels] if isinstance(levels, str) else list(levels)
    unknown = [lv for lv in wanted if lv not in ALL_LEVELS]
    if unknown:
        raise ValueError(f"levels: unknown {unknown}; known: {list(ALL_LEVELS)}")
    return [lv for lv in ALL_LEVELS if lv in wanted]


def _as_list(value: Sequence[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(items))  # `--dtype float32 float32` runs once


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_environment(name: str, claims: Claims, devices: Sequence[str]) -> None:
    """Before any case runs: every device asked for exists here (one clear error otherwise)."""
    for device in devices:
        kind = device.split(":")[0]
        if kind == "cpu":
            continue
        if kind == "cuda" and claims.array == "torch" and not _cuda_available():
            hint = ""
            if "triton" in name:
                hint = ("; Triton kernels run on the CPU under the interpreter: "
                        f"TRITON_INTERPRET=1 dla-conformance run --impl {name} --device cpu")
            raise MachineError(f"device: 'cuda' was asked for but torch finds no CUDA device "
                                    f"on this machine{hint}")


class MachineError(ValueError):
    """The machine cannot run what was asked for (a missing device); a usage error."""


def select(loaded: LoadedImpl, dtypes: Sequence[str] | str | None,
           devices: Sequence[str] | str | None) -> tuple[list[str], list[tuple[str, str]]]:
    """The devices and the (device, dtype) pairs of a run, inside the claims (DLA-11.2).

    A dtype or device asked for that the implementation does not claim is a
    usage error: what lies outside the claims is probed by the ``claims``
    level, never certified.
    """
    claims = loaded.claims
    dvs = _as_list(devices) or list(claims.devices)
    bad = [d for d in dvs if d not in claims.devices]
    if bad:
        raise ValueError(f"device: {loaded.name} does not claim {bad} (CLAIMS['devices'] is "
                         f"{list(claims.devices)}); unclaimed devices are not certified")
    asked = _as_list(dtypes)
    unknown = [d for d in asked or () if d not in DTYPES]
    if unknown:
        raise ValueError(f"dtype: unknown {unknown}; the tolerance model covers {list(DTYPES)}")
    pairs: list[tuple[str, str]] = []
    for device in dvs:
        claimed = claims.dtypes_on(device)
        wanted = asked if asked is not None else list(claimed)
        bad = [d for d in wanted if d not in claimed]
        if bad:
            raise ValueError(f"dtype: {loaded.name} does not claim {bad} on {device!r} "
                             f"(CLAIMS['dtypes'] there is {list(claimed)}); the claims level "
                             "probes unclaimed dtypes, it does not certify them")
        pairs.extend((device, d) for d in wanted)
    check_environment(loaded.name, claims, dvs)
    return dvs, pairs


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
    dvs, pairs = select(loaded, dtypes, devices)
    out: list[tuple[Context, Check]] = []
    for device, dtype in pairs:
        ctx = Context(Adapter(loaded, dtype, device), prof, seed)
        for level in levels:
            out.extend((ctx, _cite_level(c)) for c in _listed(level, ctx))
    dts = [d for d in DTYPES if any(p[1] == d for p in pairs)]
    return dts, dvs, out
