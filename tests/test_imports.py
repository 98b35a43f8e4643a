"""No import circles among the project's modules (gr2_sim, policies, envs): data flows one way.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a circle that only works
because one side imports lazily is still a circle. A package importing its own submodules is not one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gr2_sim", "policies", "envs")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(path: Path, known: set[str], this: str) -> set[str]:
    """The project modules ``path`` imports anywhere in it (``from a import b`` may name the module ``a.b``)."""
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n in known and n != this and not n.startswith(this + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_module_import_graph_has_no_circles():
    files = module_files()
    graph = {m: imported_modules(p, set(files), m) for m, p in files.items()}
    assert "gr2_sim.train" not in graph["gr2_sim.objectives"]  # the circle that was: both use train_config
    assert "gr2_sim.train" not in graph["policies.gr2"]  # policies take the device rule from gr2_sim.device
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_circle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_objectives_and_train_config_import_alone_and_train_reexports_its_config():
    code = ("import sys; import gr2_sim.objectives, gr2_sim.train_config, gr2_sim.device; "
            "assert 'gr2_sim.train' not in sys.modules, 'objectives imported the training loop'; "
            "from gr2_sim.train import TrainConfig, STAGES; from gr2_sim.train_config import TrainConfig as C; "
            "assert TrainConfig is C and 'action' in STAGES")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
