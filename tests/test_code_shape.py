"""Shape rules of the code base (issue #19), read from the source with ``ast``:

- no function or method in crrg/, train/ or demo/ is over 80 lines;
- no import cycle among the modules of crrg/, counting every import (type-only and
  function-level ones too);
- in train/, an entry-point script (a module with ``if __name__ == "__main__"`` or a top-level
  ``main``) is imported by no other train module: shared code lives in helper modules; the
  package docstring lists each module as a script or a helper.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import train

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)  # from pkg import module
    return {m for m in found if m in known and m != module}


def _is_script(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


@pytest.mark.parametrize("package", ["crrg", "train", "demo"])
def test_no_function_over_80_lines(package: str) -> None:
    long = []
    for path in _modules(package).values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_no_import_cycle_in_crrg() -> None:
    modules = _modules("crrg")
    graph = {m: _imported(m, p, modules) for m, p in modules.items()}
    assert graph["crrg.pipeline"], "the import graph is empty: the parser is broken"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle in crrg/: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_train_module_imports_a_script() -> None:
    modules = _modules("train")
    scripts = {m for m, p in modules.items() if _is_script(p)}
    assert {"train.prepare", "train.evaluate", "train.train_heads"} <= scripts
    bad = [f"{m} imports the script {s}" for m, p in modules.items()
           for s in sorted(_imported(m, p, modules) & scripts)]
    assert not bad, "\n".join(bad)


def test_train_package_docstring_lists_every_script_and_helper() -> None:
    doc = train.__doc__ or ""
    scripts_part, _, helpers_part = doc.partition("**helpers**")
    listed_scripts = set(re.findall(r"``(\w+)``", scripts_part.partition("**scripts**")[2]))
    listed_helpers = set(re.findall(r"``(\w+)``", helpers_part))
    modules = {m.removeprefix("train."): p for m, p in _modules("train").items() if m != "train"}
    scripts = {m for m, p in modules.items() if _is_script(p)}
    assert listed_scripts - {"main"} == scripts
    assert listed_helpers == set(modules) - scripts
