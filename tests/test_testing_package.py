"""The test tooling (``rasa_sparkcentral.testing``) stays apart from the runtime: the
channel never imports it, importing it does nothing, and its modules import each other
in one direction only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

from rasa_sparkcentral.testing.emulator.events import EventBus
from rasa_sparkcentral.testing.emulator.models import EmulatorEvent

PACKAGE = Path(__file__).resolve().parent.parent / "rasa_sparkcentral"

# Runs `code` after wrapping atexit.register so that every registration is listed with the
# module of the registered function (printed last, one per line, as "atexit <module>").
_RECORD_ATEXIT = """
import atexit, sys
_registered = []
_register = atexit.register
def _recording(fn, *args, **kwargs):
    _registered.append(getattr(fn, "__module__", "?"))
    return _register(fn, *args, **kwargs)
atexit.register = _recording
"""


def _run(code: str) -> List[str]:
    script = _RECORD_ATEXIT + code + "\nfor m in _registered: print('atexit', m)\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Set[str]:
    """Every module ``path`` imports (also under TYPE_CHECKING), relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph(root: Path) -> Dict[str, Set[str]]:
    modules = {_module_name(p): p for p in root.rglob("*.py")}
    return {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle of ``graph`` (empty when there is none)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_testing_package_has_no_import_cycle() -> None:
    graph = _graph(PACKAGE / "testing")
    assert "rasa_sparkcentral.testing.emulator.server" in graph
    assert _cycle(graph) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_the_runtime_never_imports_the_testing_package() -> None:
    runtime = list(PACKAGE.glob("*.py"))
    assert any(p.name == "channel.py" for p in runtime)
    for path in runtime:
        imported = _imports(path)
        assert not any(m.startswith("rasa_sparkcentral.testing") for m in imported), path


def test_importing_the_channel_loads_no_tooling_and_registers_no_exit_hook() -> None:
    lines = _run(
        "import rasa_sparkcentral, rasa_sparkcentral.channel\n"
        "tooling = [m for m in sys.modules if m.startswith('rasa_sparkcentral.testing')]\n"
        "print('tooling', tooling)\n"
    )
    assert "tooling []" in lines
    assert [line for line in lines if line.startswith("atexit rasa_sparkcentral")] == []


def test_importing_the_testing_package_does_nothing() -> None:
    lines = _run(
        "before = set(sys.modules)\n"
        "import rasa_sparkcentral.testing\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print('ours', [m for m in new if m.startswith('rasa_sparkcentral')])\n"
        "print('heavy', [m for m in new if m.split('.')[0] in ('aiohttp', 'asyncio', 'rasa')])\n"
        "import rasa_sparkcentral.testing.processes, rasa_sparkcentral.testing.stack\n"
    )
    assert "ours ['rasa_sparkcentral', 'rasa_sparkcentral.testing']" in lines
    assert "heavy []" in lines
    assert [line for line in lines if line.startswith("atexit rasa_sparkcentral")] == []


def test_the_exit_hook_is_registered_when_the_first_process_starts() -> None:
    lines = _run(
        "from rasa_sparkcentral.testing.processes import ManagedProcess\n"
        "import tempfile, os\n"
        "log = os.path.join(tempfile.mkdtemp(), 'p.log')\n"
        "argv = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "print('started')\n"
        "a = ManagedProcess(argv, log_path=log).start()\n"
        "b = ManagedProcess(argv, log_path=log).start()\n"
        "a.stop(); b.stop()\n"
    )
    ours = [line for line in lines if line.startswith(("started", "atexit rasa_sparkcentral"))]
    assert ours == ["started", "atexit rasa_sparkcentral.testing.processes"]


async def test_a_subscription_gets_every_event_in_order_until_closed() -> None:
    bus = EventBus()
    subscription = bus.subscribe(max_pending=2)
    bus.emit(EmulatorEvent(kind="call", line="dropped"))
    bus.emit(EmulatorEvent(kind="call", line="one"))
    bus.emit(EmulatorEvent(kind="transcript", line="two"))
    subscription.close()
    bus.emit(EmulatorEvent(kind="call", line="after close"))
    assert [event.line async for event in subscription] == ["one", "two"]
    assert subscription.dropped == 1
