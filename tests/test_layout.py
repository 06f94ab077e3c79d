"""The import rules of docs/architecture.md, checked on the source (lazy imports inside functions
count): no cycle between modules, no arrow from a lower layer back up, the orchestration never
imports the built-in task nor names its metrics, and every package's public API star-imports."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ablations", "models", "runner", "reports")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> set[str]:
    """Modules of ours that ``module`` imports anywhere in its source (functions included)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names = [node.args[0].value]
        for name in names:
            while name and name not in MODULES:  # an attribute of a module: its module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _parents(module: str) -> set[str]:
    """A module's own package __init__ files are not import arrows of its design (Python runs them)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _edges():
    for module, targets in GRAPH.items():
        for target in targets - _parents(module):
            yield module, target


def test_no_import_cycle():
    seen, stack, low, index, on_stack, cycles = {}, [], {}, [0], set(), []
    graph = {m: {t for t in GRAPH[m] - _parents(m)} for m in GRAPH}

    def visit(node):
        seen[node] = low[node] = index[0]
        index[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in seen:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], seen[target])
        if low[node] == seen[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in seen:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# (importing package, forbidden packages): the arrows that would run back up the data flow
FORBIDDEN = [
    ("models", ("ablations", "runner", "reports")),
    ("ablations", ("models", "runner", "reports")),
    ("reports", ("models", "runner")),
    ("runner.store", ("runner.orchestrate", "runner.views", "runner.cli", "runner.tasks", "runner.tracking", "reports")),
    ("runner.tracking", ("runner.orchestrate", "runner.views", "runner.cli", "runner.tasks", "runner.store", "reports")),
    ("runner.tasks", ("runner.orchestrate", "runner.views", "runner.cli", "runner.store", "runner.tracking", "reports")),
    ("runner.orchestrate", ("runner.tasks", "runner.views", "runner.cli", "reports")),
    ("runner.views", ("runner.tasks", "runner.cli")),
]


@pytest.mark.parametrize("package,forbidden", FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_no_arrow_back_up(package, forbidden):
    bad = sorted(f"{m} -> {t}" for m, t in _edges() if _in(m, package)
                 and any(_in(t, f) for f in forbidden))
    assert bad == []


REPORT_METRICS = re.compile(r"\b(grader|iou|si_logrmse|loss_semseg|loss_depth)\b", re.I)
GENERIC = ("runner.orchestrate", "runner.store", "runner.tracking", "runner.views", "reports")


def test_orchestration_names_no_metric_of_the_report():
    """Only the mtl task (and its study file) knows the report's metrics: the orchestration,
    store, tracking, views and report code are generic over tasks."""
    bad = []
    for module, path in MODULES.items():
        if any(_in(module, g) for g in GENERIC):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if REPORT_METRICS.search(line):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert bad == []


@pytest.mark.parametrize("package", ["ablations", "models", "runner", "reports", "runner.orchestrate",
                                     "runner.store", "runner.tracking", "runner.tasks.mtl", "runner.views"])
def test_star_import_works(package):
    module = importlib.import_module(package)
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # noqa: S102 - the point of the test
    for name in getattr(module, "__all__", []):
        assert name in namespace


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_bench_imports_no_test_module():
    bad = [str(p) for p in (ROOT / "bench").glob("*.py")
           if re.search(r"^\s*(from|import)\s+tests?\b|sys\.path.*tests", p.read_text(), re.M)]
    assert bad == []
