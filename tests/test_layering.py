"""The package's layering: no import circle, Ray only in simulation/, MLflow only in tracking/, config free of strategies."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedray"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(name: str) -> set[str]:
    """Every module this module imports, at module or function level (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES}
    return found


def graph() -> dict[str, set[str]]:
    return {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def test_no_import_circle_in_the_package():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_ray_only_in_simulation_and_mlflow_only_in_tracking():
    for name in MODULES:
        top = {m.split(".")[0] for m in imports(name)}
        if "ray" in top:
            assert name.startswith("fedray.simulation"), f"{name} imports ray"
        if "mlflow" in top:
            assert name.startswith("fedray.tracking"), f"{name} imports mlflow"


def test_config_and_the_training_loop_import_no_strategy():
    for name in ("fedray.config", "fedray.configtypes", "fedray.methods", "fedray.training.local", "fedray.training.hooks"):
        assert not {m for m in imports(name) if m.startswith("fedray.strategies")}, name


def test_generic_machinery_names_no_method():
    # training/ also holds the losses of particular methods (marginal, ConDist); its loop and hooks are generic.
    generic = ("fedray.training.local", "fedray.training.hooks", "fedray.training.evaluate")
    methods = ("fedkd", "teacher", "scaffold", "feddyn", "fedbn", "fedprox", "marginal", "condist", "localonly")
    for name, path in MODULES.items():
        if name.split(".")[1:2] in (["simulation"], ["tracking"]) or name in generic:
            text = path.read_text().lower()
            named = [m for m in methods if m in text]
            assert not named, f"{name} names {named}"
