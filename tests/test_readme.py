"""The README's two commands are the project's contract with users; CI runs the test one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick, flags=re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds), "each command is one line a user can paste"
    main_job, tests = cmds
    assert "dla-conformance run" in main_job
    assert tests.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    tests_cmd = _readme_commands()[1]
    # CI makes its own venv first; the install-and-test part must be the README's, verbatim.
    install_and_test = tests_cmd.split("&& ", 2)[2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci, f"{install_and_test!r} not found in .ci/run"


def test_extras_named_in_readme_exist() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for cmd in _readme_commands():
        for extras in re.findall(r'"\.\[([a-z,]+)\]"', cmd):
            for extra in extras.split(","):
                assert re.search(rf"^{extra} = \[", pyproject, flags=re.M), extra


def test_readme_reference_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    tour = text.split("## A tour of the reference", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.+?)\n```", tour, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    o, plan = namespace["o"], namespace["plan"]
    assert o.shape == (1, 16, 2, 8)
    assert (plan.count <= namespace["C"]).all()
