"""The shape of the runtime package, read from its source: no import circle between its
modules, and importing the channel (as Rasa does) loads no test tooling and registers no
``atexit`` hook."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import rasa_sparkcentral

PACKAGE = "rasa_sparkcentral"
PACKAGE_DIR = Path(rasa_sparkcentral.__file__).resolve().parent
TOOLING = (f"{PACKAGE}.testing", f"{PACKAGE}.emulator", f"{PACKAGE}.servers")


def runtime_modules() -> Dict[str, Path]:
    """The package's own modules (its top level; subpackages such as the emulator and the
    test tooling are not part of the runtime)."""
    modules = {PACKAGE: PACKAGE_DIR / "__init__.py"}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.name != "__init__.py":
            modules[f"{PACKAGE}.{path.stem}"] = path
    return modules


RUNTIME = runtime_modules()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, module: str, top_level_only: bool) -> Iterator[str]:
    """Dotted names ``module``'s code imports (outside the package, ``from a import b``
    yields ``a`` and ``a.b``: ``b`` may be a module), leaving out what only type checkers
    see."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            continue
        if isinstance(child, ast.Import):
            yield from (alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                parts = module.split(".")[: -child.level] if module != PACKAGE else [PACKAGE]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            for alias in child.names:
                name = f"{base}.{alias.name}"
                # ``from package import module`` imports the module, not the package's
                # own code (which Python only runs first)
                if name in RUNTIME:
                    yield name
                else:
                    yield base
                    if base.split(".")[0] != PACKAGE:
                        yield name
        if top_level_only and isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
        ):
            continue
        yield from _imports(child, module, top_level_only)


def import_graph(top_level_only: bool = False) -> Tuple[Dict[str, Set[str]], Set[str]]:
    """Edges between the runtime modules, and every other module they import."""
    modules = RUNTIME
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    others: Set[str] = set()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for imported in _imports(tree, name, top_level_only):
            if imported in modules:
                if imported != name:
                    graph[name].add(imported)
            elif imported.split(".")[0] != PACKAGE:
                others.add(imported)
    return graph, others


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    done: Set[str] = set()

    def visit(node: str, path: List[str]) -> Optional[List[str]]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_no_runtime_module_imports_one_that_imports_it_back() -> None:
    graph, _ = import_graph()
    assert graph.get(f"{PACKAGE}.channel")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


def _reachable_third_party(start: str) -> List[str]:
    """The modules outside the package that ``start`` loads through the runtime modules it
    imports when imported (module-level imports only)."""
    graph, _ = import_graph(top_level_only=True)
    seen: Set[str] = set()
    todo = [PACKAGE, start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    modules = RUNTIME
    third_party: Set[str] = set()
    for name in seen:
        tree = ast.parse(modules[name].read_text())
        third_party.update(
            imported
            for imported in _imports(tree, name, top_level_only=True)
            if imported.split(".")[0] != PACKAGE
        )
    return sorted(third_party)


def test_importing_the_channel_loads_no_test_tooling_and_registers_no_atexit_hook() -> None:
    third_party = _reachable_third_party(f"{PACKAGE}.channel")
    assert "rasa.core.channels.channel" in third_party
    code = (
        "import atexit, importlib, json, sys\n"
        f"for name in {third_party!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass  # a name imported from a module, not a module\n"
        "before = atexit._ncallbacks()\n"
        "import rasa_sparkcentral, rasa_sparkcentral.channel\n"
        "after = atexit._ncallbacks()\n"
        f"tooling = sorted(m for m in sys.modules if m.startswith({TOOLING!r}))\n"
        "print(json.dumps({'before': before, 'after': after, 'tooling': tooling}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tooling"] == []
    assert report["after"] == report["before"], "our modules registered an atexit hook"
