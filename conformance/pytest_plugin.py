"""pytest plugin: run the DLA certification inside a kernel repository's own test suite.

``pytest --dla-impl=NAME_OR_PATH [--dla-levels ...] [--dla-dtype ...]
[--dla-device ...] [--dla-profile ci|thorough] [--dla-seed N] [--dla-report out.json]``
adds one test item per (level, clause check, dtype, device), the same checks
``dla-conformance run`` performs. The plugin is loaded through the
``pytest11`` entry point; without ``--dla-impl`` it adds nothing and imports
nothing beyond this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

_RESULTS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dla-conformance", "DLA-v1 conformance certification")
    group.addoption(
        "--dla-impl",
        default=None,
        metavar="NAME_OR_PATH",
        help="certify this implementation (registered name or 'module:attribute')",
    )
    group.addoption(
        "--dla-levels",
        default=None,
        metavar="LEVELS",
        help="comma-separated levels (default: the claimed ones + properties)",
    )
    group.addoption(
        "--dla-dtype",
        default=None,
        metavar="DTYPES",
        help="comma-separated dtypes (default: the claimed ones)",
    )
    group.addoption(
        "--dla-device",
        default=None,
        metavar="DEVICES",
        help="comma-separated devices (default: the claimed ones)",
    )
    group.addoption(
        "--dla-profile", default="ci", choices=("ci", "thorough"), help="ci (fast) or thorough"
    )
    group.addoption("--dla-seed", default=0, type=int, help="seed of every draw")
    group.addoption(
        "--dla-report", default=None, metavar="PATH", help="write the JSON conformance report here"
    )


def _words(value: str | None) -> list[str] | None:
    return None if value is None else [w for w in value.replace(",", " ").split() if w]


class DLACheckItem(pytest.Item):
    """One conformance check; fails with the check's detail (worst error, bound and where)."""

    def __init__(self, *, check: Any, ctx: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check
        self.ctx = ctx
        self.failed_results: list[Any] = []

    def runtest(self) -> None:
        from dla.conformance.checks import run_check

        results = run_check(self.check, self.ctx)
        self.config.stash.setdefault(_RESULTS, []).extend(results)
        for r in results:
            self.user_properties.append((f"{r.clause} {r.check}", "PASS" if r.passed else r.detail))
        self.failed_results = [r for r in results if not r.passed]
        if self.failed_results:
            raise DLACheckFailure(self.failed_results)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, DLACheckFailure):
            return "\n".join(
                f"{r.level} {r.clause} {r.check} [{r.dtype}/{r.device}]: {r.detail}"
                for r in excinfo.value.results
            )
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, None, str]:
        return "dla-conformance", None, f"{self.check.level} {self.check.clause}: {self.check.name}"


class DLACheckFailure(Exception):
    def __init__(self, results: list[Any]) -> None:
        super().__init__("; ".join(r.detail for r in results))
        self.results = results


def _make_items(session: pytest.Session) -> list[pytest.Item]:
    from dla.conformance.levels import collect, resolve_levels
    from dla.conformance.loader import load

    opt = session.config.getoption
    loaded = load(opt("--dla-impl"))
    levels = resolve_levels(_words(opt("--dla-levels")), loaded.claims)
    dtypes, devices, work = collect(
        loaded,
        levels,
        _words(opt("--dla-dtype")),
        _words(opt("--dla-device")),
        opt("--dla-profile"),
        opt("--dla-seed"),
    )
    session.config.stash[_META] = (loaded, levels, dtypes, devices)
    node = f"dla-conformance[{loaded.name}]"
    parent = DLACertification.from_parent(session, name=node, nodeid=node)
    items: list[pytest.Item] = []
    for ctx, check in work:
        name = f"{check.level}[{ctx.dtype}-{ctx.device}: {check.name}]"
        items.append(DLACheckItem.from_parent(parent, name=name, check=check, ctx=ctx))
    return items


class DLACertification(pytest.Collector):
    """The parent node of the checks of one implementation (their node ids start with it)."""

    def collect(self) -> list[pytest.Item]:  # items are made in pytest_collection_modifyitems
        return []


_META = pytest.StashKey[tuple]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.getoption("--dla-impl") is None:
        return
    try:
        items.extend(_make_items(session))
    except ValueError as exc:  # a bad name, path, level or profile: a usage error
        raise pytest.UsageError(f"--dla-impl: {exc}") from exc


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    path = config.getoption("--dla-report", None)
    if config.getoption("--dla-impl", None) is None or path is None or _META not in config.stash:
        return
    from dla.conformance.report import Report

    loaded, levels, dtypes, devices = config.stash[_META]
    report = Report(
        implementation=loaded.name,
        claims=loaded.claims,
        levels=levels,
        dtypes=dtypes,
        devices=devices,
        profile=config.getoption("--dla-profile"),
        seed=config.getoption("--dla-seed"),
        results=config.stash.get(_RESULTS, []),
    )
    report.duration_s = sum(r.seconds for r in report.results)
    Path(path).write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
