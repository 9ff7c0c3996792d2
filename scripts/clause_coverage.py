"""Print, for every clause of spec/SPEC.md, the tests that cite it.

A test cites a clause when its id (``DLA-3.4``) appears in the test function's
source (decorators, docstring, assertions, messages), in its module's
docstring, or in a module-level table or helper the test names (the cases of a
parametrized test usually live in such a table). Run:

    python scripts/clause_coverage.py            # markdown table
    python scripts/clause_coverage.py --missing  # only clauses no test cites
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAUSE = re.compile(r"\bDLA-(\d+)\.(\d+)\b")


def spec_clauses() -> list[str]:
    text = (ROOT / "spec" / "SPEC.md").read_text()
    seen: dict[str, None] = {}
    for m in re.finditer(r"\*\*(DLA-\d+\.\d+)\b", text):
        seen.setdefault(m.group(1), None)
    return list(seen)


def _ids(text: str) -> set[str]:
    return {f"DLA-{a}.{b}" for a, b in CLAUSE.findall(text)}


def _top_level_ids(tree: ast.Module, source: str) -> dict[str, set[str]]:
    """Clause ids in each module-level assignment and helper function, by name."""
    out: dict[str, set[str]] = {}
    for node in tree.body:
        seg = ast.get_source_segment(source, node) or ""
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
            out[node.name] = _ids(seg)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = _ids(seg)
    return out


def citations(test_dir: Path = ROOT / "tests") -> dict[str, set[str]]:
    """clause id -> {"file::test"} over every test function under ``test_dir``."""
    out: dict[str, set[str]] = defaultdict(set)
    for path in sorted(test_dir.rglob("test_*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module_ids = _ids(ast.get_docstring(tree) or "")
        top = _top_level_ids(tree, source)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                seg = ast.get_source_segment(source, node) or ""
                for dec in node.decorator_list:
                    seg += ast.get_source_segment(source, dec) or ""
                named = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                ids = _ids(seg) | module_ids
                for name in named & top.keys():
                    ids |= top[name]
                for cid in ids:
                    out[cid].add(f"{path.relative_to(test_dir.parent)}::{node.name}")
    return out


def main(argv: list[str]) -> int:
    cites = citations()
    clauses = spec_clauses()
    missing = [c for c in clauses if not cites.get(c)]
    if "--missing" in argv:
        print("\n".join(missing) or "every clause is cited by a test")
        return 1 if missing else 0
    print("| clause | tests citing it |\n|---|---|")
    for c in clauses:
        tests = sorted(cites.get(c, ()))
        shown = ", ".join(t.split("::")[1] for t in tests[:4])
        more = f" (+{len(tests) - 4} more)" if len(tests) > 4 else ""
        print(f"| {c} | {shown or '**none**'}{more} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
