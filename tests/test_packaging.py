"""The installed package: what the wheel ships and what a user can import.

The design card keeps ``reference/``, ``conformance/``, ``impls/`` and
``fixtures/`` at the top of the repository, and ``pyproject.toml`` maps them
into the one namespace ``dla``. These tests build the wheel from a copy of
the source tree, install it into a clean virtual environment and import it
from outside the checkout, so a forgotten subpackage or a leaked top-level
``reference`` module fails CI. This runs in CI (about 20 s; the install needs
the package registry for numpy, tqdm, jsonschema and hypothesis). It then runs the
main job, `dla-conformance run --impl reference`, with the base dependencies only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
TOP_LEVEL_DIRS = ("reference", "conformance", "impls", "fixtures")
SOURCE_DIRS = ("dla", *TOP_LEVEL_DIRS)
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def package_of(directory: Path) -> str:
    """The installed package name of a source directory, through ``package-dir``."""
    rel = directory.relative_to(ROOT).as_posix()
    best = max((src for src in PACKAGE_DIR.values() if rel == src or rel.startswith(src + "/")),
               key=len)
    name = next(n for n, src in PACKAGE_DIR.items() if src == best)
    rest = rel[len(best):].strip("/")
    return name + ("." + rest.replace("/", ".") if rest else "")


def source_dir_of(package: str) -> Path:
    """The source directory of an installed package name, through ``package-dir``."""
    best = max((n for n in PACKAGE_DIR if package == n or package.startswith(n + ".")), key=len)
    rest = package[len(best):].strip(".")
    return ROOT / PACKAGE_DIR[best] / rest.replace(".", "/")


def python_dirs() -> list[Path]:
    """Every directory under the package roots that holds Python code."""
    found = set()
    for top in SOURCE_DIRS:
        for f in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in f.parts:
                found.add(f.parent)
    return sorted(found)


def test_every_python_directory_is_a_listed_package():
    """A new subpackage cannot be forgotten in ``pyproject.toml``: it would not be installed."""
    for d in python_dirs():
        rel = d.relative_to(ROOT)
        assert (d / "__init__.py").is_file(), f"{rel} holds Python code but no __init__.py"
        assert package_of(d) in PACKAGES, (
            f"{d.relative_to(ROOT)} is package {package_of(d)!r}, missing from "
            "[tool.setuptools] packages in pyproject.toml"
        )


def test_every_listed_package_has_its_source_directory():
    for p in PACKAGES:
        init = source_dir_of(p) / "__init__.py"
        assert init.is_file(), f"{p}: no {init}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the tree (the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    for d in SOURCE_DIRS:
        shutil.copytree(ROOT / d, src / d, ignore=IGNORE)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "out")]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.append("--no-build-isolation")  # no download of the build backend when it is here
    cmd.append(f"{src}{os.sep}")  # a path, never a requirement name
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (whl,) = (tmp / "out").glob("dla_spec-*.whl")
    return whl


def test_wheel_ships_every_listed_package_and_nothing_at_the_top_level(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    for p in PACKAGES:
        assert f"{p.replace('.', '/')}/__init__.py" in names, f"{p} is missing from the wheel"
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"dla", *(t for t in tops if t.endswith(".dist-info"))}, tops
    for f in (ROOT / "fixtures").rglob("*"):  # package data of dla.fixtures
        if f.suffix in (".json", ".npz"):
            assert "dla/fixtures/" + f.relative_to(ROOT / "fixtures").as_posix() in names, f


IMPORT_CHECK = """
import importlib.util, sys
import numpy as np
import dla, dla.reference, dla.conformance, dla.impls
from dla.reference import forward
site = sys.argv[1]
for m in (dla, dla.reference, dla.conformance, dla.impls):
    assert m.__file__.startswith(site), (m.__name__, m.__file__)
for name in ("reference", "conformance", "impls", "fixtures"):
    assert importlib.util.find_spec(name) is None, name + " is importable at the top level"
x = np.ones((1, 3, 1, 2))
o, _ = forward(x, x, x, -np.ones((1, 3, 1)), np.ones((1, 3, 1, 2)), dla.Config(capacity=2))
assert o.shape == (1, 3, 1, 2)
print("ok")
"""


def test_installed_wheel_imports_under_dla_only(wheel: Path, tmp_path: Path):
    """From outside the checkout, a clean environment imports ``dla.*`` and nothing else."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, env=env,
                   cwd=tmp_path, capture_output=True, text=True, timeout=300)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(py), "-c", purelib], check=True, env=env, cwd=tmp_path,
                          capture_output=True, text=True).stdout
    result = subprocess.run([str(py), "-c", IMPORT_CHECK, site.strip()], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
    # The main job with the base dependencies only: every level the reference claims, the
    # golden fixtures shipped as package data and the Hypothesis-driven properties included.
    cli = venv / "bin" / "dla-conformance"
    run = subprocess.run([str(cli), "run", "--impl", "reference", "--no-progress",
                          "--only-failures"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "reference: PASSED" in run.stdout, run.stdout + run.stderr
