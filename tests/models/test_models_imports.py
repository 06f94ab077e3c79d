"""``models`` imports nothing of ablate (issue #9): the report's networks are usable, and
testable, without the runner, the study-file package or the report. Every module's syntax tree
is walked, imports inside functions included, so a lazy import cannot slip through."""
import ast
from pathlib import Path

import models

FORBIDDEN = ("ablations", "runner", "reports")
MODELS_DIR = Path(models.__file__).parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, wherever it is (module level or a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
                in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_models_imports_nothing_of_ablate():
    files = sorted(MODELS_DIR.glob("*.py"))
    assert MODELS_DIR / "weights.py" in files and len(files) >= 9  # the walk sees the package
    offending = [f"{path.name}:{line}: {module}" for path in files for line, module in imported_modules(path)
                 if module.split(".")[0] in FORBIDDEN]
    assert offending == []


def test_the_walk_finds_lazy_and_dynamic_imports(tmp_path):
    """The checker itself: an import inside a function and an importlib call are both seen."""
    sample = tmp_path / "sample.py"
    sample.write_text("import torch\n"
                      "def f():\n"
                      "    from ablations.errors import InputError\n"
                      "    import importlib\n"
                      "    return importlib.import_module('runner.atomic')\n")
    assert imported_modules(sample) == [(1, "torch"), (3, "ablations.errors"), (4, "importlib"),
                                        (5, "runner.atomic")]
