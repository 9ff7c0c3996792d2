"""The conformance suite of DLA-v1: certifies an implementation against the reference.

``certify(impl, ...)`` runs each claimed level (plan, execute, end_to_end,
streaming, varlen, gradients, golden, and always properties) in each claimed
dtype and device, and returns a :class:`~dla.conformance.report.Report` with
one result per check, tagged with the spec clause it certifies. A run is
deterministic given ``seed`` and ``profile``, which the report records.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from dla.conformance.report import ClauseResult, Report

__all__ = ["ClauseResult", "Report", "certify", "new_report", "torch_threads"]

_T = TypeVar("_T")


def _progress(items: Sequence[_T], enabled: bool, desc: str) -> Iterable[_T]:
    """A tqdm progress bar when available, a plain counter on stderr otherwise."""
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, desc)
    return tqdm(items, desc=desc, unit="check", file=sys.stderr, leave=False)


def _plain_progress(items: Sequence[_T], desc: str) -> Iterator[_T]:
    n = len(items)
    for i, item in enumerate(items, 1):
        print(f"\r{desc}: {i}/{n}", end="", file=sys.stderr, flush=True)
        yield item
    print(file=sys.stderr)


def certify(
    impl: Any,
    *,
    levels: Sequence[str] | str | None = None,
    dtype: Sequence[str] | str | None = None,
    device: Sequence[str] | str | None = None,
    profile: str = "ci",
    seed: int = 0,
    progress: bool = False,
    threads: int | None = 1,
) -> Report:
    """Certify ``impl`` (a registered name, ``"module:attr"`` or an object); see the module doc.

    ``levels`` defaults to the claimed levels plus the always-run ones;
    ``dtype`` and ``device`` default to the claimed ones. Bad arguments raise
    ``ValueError``; a failing or crashing implementation never raises, it
    gets failed results. ``threads`` sets torch's intra-op threads for the run
    (``None`` leaves them alone): the cases are small, and extra threads only
    add synchronisation (25 times slower on a busy 2-core machine, measured on
    many-sequence varlen calls).
    """
    from dla.conformance.checks import run_check
    from dla.conformance.levels import collect, resolve_levels
    from dla.conformance.loader import load

    t0 = time.perf_counter()
    loaded = load(impl)
    lv = resolve_levels(levels, loaded.claims)
    dtypes, devices, work = collect(loaded, lv, dtype, device, profile, seed)
    report = new_report(loaded, lv, dtypes, devices, profile, seed,
                        complete=levels is None and dtype is None and device is None)
    report.planned = len(work)
    with torch_threads(threads):
        try:
            for ctx, check in _progress(work, progress, f"certifying {loaded.name}"):
                report.results.extend(run_check(check, ctx))
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from `timeout` (the CLI maps it here)
            report.interrupted = True
    report.duration_s = time.perf_counter() - t0
    stamp(report)
    return report


def stamp(report: Report) -> None:
    """Record when the run ended and the implementation's commit or version at that time."""
    from datetime import datetime, timezone

    from dla.conformance.certificate import implementation_version

    report.date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report.implementation_version = implementation_version(report).text()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, if torch is in use."""
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def new_report(loaded: Any, levels: list[str], dtypes: list[str], devices: list[str],
               profile: str, seed: int, *, complete: bool) -> Report:
    """An empty report of a run, with what reproduces it (the CLI and the pytest plugin)."""
    from dla.conformance.loader import origin_of

    origin, search_path = origin_of(loaded)
    args = ["--impl", loaded.name, "--levels", *levels, "--dtype", *dtypes,
            "--device", *devices, "--profile", profile, "--seed", str(seed)]
    text = None
    if not loaded.by_name:  # an object handed to certify(): the CLI cannot load it by name
        text = (f"certify(<the {loaded.name} object>, levels={levels!r}, dtype={dtypes!r}, "
                f"device={devices!r}, profile={profile!r}, seed={seed})")
    return Report(implementation=loaded.name, claims=loaded.claims, levels=levels,
                  dtypes=dtypes, devices=devices, profile=profile, seed=seed, complete=complete,
                  origin=origin, search_path=search_path, reproduce_args=args,
                  reproduce_text=text)
