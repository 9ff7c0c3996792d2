"""pytest plugin: run the DLA certification inside a kernel repository's own test suite.

``pytest --dla-impl=NAME_OR_PATH [--dla-levels ...] [--dla-dtype ...]
[--dla-device ...] [--dla-profile ci|thorough] [--dla-seed N] [--dla-report out.json]``
adds one test item per (level, clause check, dtype, device), the same checks
``dla-conformance run`` performs. Checks outside the implementation's claims
are reported as skipped ("not supported", DLA-11.2). The plugin is loaded
through the ``pytest11`` entry point; without ``--dla-impl`` it adds nothing
and imports nothing beyond this module.

Under pytest-xdist (``pytest --dla-impl=X -n auto``) every worker collects the
same items (each check draws its inputs from the seed and its own name, never
from the process), each item's results travel to the controller in its
report, and the controller writes one JSON report, in collection order, equal
to a serial run's apart from timings.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

#: The key under which each item's results travel in its report (serial and pytest-xdist runs).
_RESULT_KEY = "dla-conformance-result"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dla-conformance", "DLA-v1 conformance certification")
    group.addoption("--dla-impl", default=None, metavar="NAME_OR_PATH",
                    help="certify this implementation (registered name or 'module:attribute')")
    group.addoption("--dla-levels", default=None, metavar="LEVELS",
                    help="comma-separated levels (default: the claimed ones + the always-run)")
    group.addoption("--dla-dtype", default=None, metavar="DTYPES",
                    help="comma-separated dtypes (default: the claimed ones)")
    group.addoption("--dla-device", default=None, metavar="DEVICES",
                    help="comma-separated devices (default: the claimed ones)")
    group.addoption("--dla-profile", default="ci", choices=("ci", "thorough"),
                    help="ci (fast) or thorough")
    group.addoption("--dla-seed", default=0, type=int, help="seed of every draw")
    group.addoption("--dla-report", default=None, metavar="PATH",
                    help="write the JSON conformance report here")
    group.addoption("--dla-threads", default=1, type=int,
                    help="torch intra-op threads while the checks run (0: leave as is)")


def _words(value: str | None) -> list[str] | None:
    return None if value is None else [w for w in value.replace(",", " ").split() if w]


class DLACheckItem(pytest.Item):
    """One conformance check; fails with the check's detail (worst error, bound and where)."""

    def __init__(self, *, check: Any, ctx: Any, index: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check
        self.ctx = ctx
        self.index = index
        self.failed_results: list[Any] = []

    def runtest(self) -> None:
        from dla.conformance import torch_threads
        from dla.conformance.checks import run_check

        with torch_threads(self.config.getoption("--dla-threads") or None):
            results = run_check(self.check, self.ctx)
        payload = {"index": self.index, "results": [r.to_json() for r in results]}
        self.user_properties.append((_RESULT_KEY, json.dumps(payload, default=str)))
        self.failed_results = [r for r in results if not r.passed]
        if self.failed_results:
            raise DLACheckFailure(self.failed_results)
        if results and all(r.status == "not_supported" for r in results):
            pytest.skip(f"not supported: {results[0].detail}")

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, DLACheckFailure):
            return "\n".join(
                f"{r.level} {r.target} {r.check} [{r.dtype}/{r.device}]: {r.detail}"
                for r in excinfo.value.results
            )
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, None, str]:
        return "dla-conformance", None, f"{self.check.level} {self.check.target}: {self.check.name}"


class DLACheckFailure(Exception):
    def __init__(self, results: list[Any]) -> None:
        super().__init__("; ".join(r.detail for r in results))
        self.results = results


def _ensure_cwd_on_path() -> None:
    """Like ``dla-conformance`` and ``python -m pytest``: find modules in the current folder."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _plan_run(config: pytest.Config) -> tuple[Any, list[str], list[str], list[str]]:
    """The implementation, levels, dtypes and devices of the run (no check is listed)."""
    from dla.conformance.levels import resolve_levels, select
    from dla.conformance.loader import load

    opt = config.getoption
    _ensure_cwd_on_path()
    loaded = load(opt("--dla-impl"))
    levels = resolve_levels(_words(opt("--dla-levels")), loaded.claims)
    devices, pairs = select(loaded, _words(opt("--dla-dtype")), _words(opt("--dla-device")))
    from dla.claims import DTYPES

    dtypes = [d for d in DTYPES if any(p[1] == d for p in pairs)]
    return loaded, levels, dtypes, devices


def _make_items(session: pytest.Session) -> list[pytest.Item]:
    from dla.conformance.levels import collect

    opt = session.config.getoption
    loaded, levels, _, _ = _plan_run(session.config)
    _, _, work = collect(loaded, levels, _words(opt("--dla-dtype")), _words(opt("--dla-device")),
                         opt("--dla-profile"), opt("--dla-seed"))
    node = f"dla-conformance[{loaded.name}]"
    parent = DLACertification.from_parent(session, name=node, nodeid=node)
    items: list[pytest.Item] = []
    for i, (ctx, check) in enumerate(work):
        name = f"{check.level}[{ctx.dtype}-{ctx.device}: {check.name}]"
        items.append(DLACheckItem.from_parent(parent, name=name, check=check, ctx=ctx, index=i))
    return items


class DLACertification(pytest.Collector):
    """The parent node of the checks of one implementation (their node ids start with it)."""

    def collect(self) -> list[pytest.Item]:  # items are made in pytest_collection_modifyitems
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.getoption("--dla-impl") is None:
        return
    try:
        items.extend(_make_items(session))
    except ValueError as exc:  # a bad name, path, level, dtype or device: a usage error
        raise pytest.UsageError(f"--dla-impl: {exc}") from exc


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather each check's results, from this process or from a pytest-xdist worker."""
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == _RESULT_KEY:
            _PAYLOADS.append(json.loads(str(value)))


#: Results of the session's checks as they arrive (one pytest session per process).
_PAYLOADS: list[dict[str, Any]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _PAYLOADS.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    path = config.getoption("--dla-report", None)
    if config.getoption("--dla-impl", None) is None or path is None:
        return
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller writes
        return
    from dla.conformance import new_report
    from dla.conformance.report import ClauseResult

    loaded, levels, dtypes, devices = _plan_run(config)
    opt = config.getoption
    report = new_report(loaded, levels, dtypes, devices, opt("--dla-profile"), opt("--dla-seed"),
                        complete=not any(opt(o) for o in ("--dla-levels", "--dla-dtype",
                                                          "--dla-device")))
    payloads = sorted(_PAYLOADS, key=lambda p: p["index"])
    report.results = [ClauseResult.from_json(r) for p in payloads for r in p["results"]]
    report.duration_s = sum(r.seconds for r in report.results)
    from dla.conformance import stamp

    stamp(report)
    Path(path).write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
