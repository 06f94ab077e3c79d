"""The report for any task: a `min` objective, tie-break decisions, and the package's purity."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import reports
from ablations.objective import Objective
from reports import MetricInfo, render_report
from reports.figures import BETTER, WORSE, step_color

LOSS = Objective("loss", "min")
METRICS = [MetricInfo("acc", "max", "Accuracy"), MetricInfo("loss", "min", "Loss")]


def _cells(kit, variant: str, losses: list[float], accs: list[float]):
    return [kit.Cell(variant, seed, "done", f"{variant}-{seed}".ljust(32, "0"),
                     {"loss": loss, "acc": acc}, wall_time_s=60.0)
            for seed, (loss, acc) in enumerate(zip(losses, accs), 1)]


def _curves(cells):
    return [dict(run_hash=c.run_hash, variant=c.variant, seed=c.seed, epoch=e, step=e * 5,
                 wall_time_s=30.0 * e, loss=c.metrics["loss"] * 2 / e, acc=c.metrics["acc"] * e / 2)
            for c in cells for e in (1, 2)]


def _min_input(kit):
    first = _cells(kit, "big", [0.50, 0.52], [0.8, 0.8]) + _cells(kit, "small", [0.40, 0.42], [0.7, 0.7])
    second = _cells(kit, "wide", [0.30, 0.31], [0.9, 0.9]) + _cells(kit, "deep", [0.45, 0.46], [0.9, 0.9])
    s1 = kit.study(kit.spec("size", {"big": {"width": 64}, "small": {"width": 16}}, seeds=[1, 2],
                            report={"small": {"loss": 0.405}}), first, LOSS, _curves(first))
    s2 = kit.study(kit.spec("shape", {"wide": {}, "deep": {}}, seeds=[1, 2], start_from="size"),
                   second, LOSS, _curves(second))
    return kit.report_input([s1, s2], METRICS, LOSS, name="digits", task="digits")


def _header(md: str, after: str) -> list[str]:
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(after))
    head = next(ln for ln in lines[start:] if ln.startswith("| Variant"))
    return [c.strip() for c in head.split("|")[1:-1]]


def test_min_objective_lowest_mean_wins_objective_first_and_gain_positive(kit):
    files = render_report(_min_input(kit), jobs=1)
    md = files["report.md"].decode("utf-8")
    assert _header(md, "## 1. size")[:4] == ["Variant", "Loss", "Loss 95% CI", "Accuracy"]
    assert "| **small** (winner) | **0.410 ± 0.014** |" in md        # lowest mean loss wins
    assert ("**Decided by:** the mean loss (lower is better): `small` 0.410 vs runner-up `big` "
            "0.510.") in md
    assert "**Best run:** `small` seed 1 —" in md                    # the lowest loss of small
    assert "Welch's t-test on the final loss, winner `small`" in md
    # the chain in objective units: 0.410 -> 0.305 is an improvement, so the gain is positive
    assert "| # | Study | Report § | Winner | Loss (mean) | Gain | Gain over | report Loss |" in md
    assert "| 1 | size | — | `small` | 0.410 | — | baseline | 0.405 |" in md
    assert "| 2 | shape | — | `wide` | 0.305 | +0.105 | size | — |" in md
    assert "mean loss 0.305 (report" not in md and "total gain +0.105." in md
    assert "Objective: loss (min)." in md and "task `digits`" in md
    assert sorted(files) == ["figures/chain.png", "figures/shape.png", "figures/size.png",
                             "report.md"]


def test_chain_colours_follow_the_goal():
    assert step_color("max", 2.0, 1.0) == BETTER and step_color("max", 1.0, 2.0) == WORSE
    assert step_color("min", 1.0, 2.0) == BETTER and step_color("min", 2.0, 1.0) == WORSE


def test_a_study_objective_other_than_the_files_is_stated_and_used(kit):
    acc = Objective("acc", "max")
    cells = _cells(kit, "a", [0.1], [0.5]) + _cells(kit, "b", [0.2], [0.9])
    s = kit.study(kit.spec("s", {"a": {}, "b": {}}), cells, acc)
    md = render_report(kit.report_input([s], METRICS, LOSS), jobs=1)["report.md"].decode("utf-8")
    assert "- Objective of this study: acc (max)." in md
    assert _header(md, "## 1. s")[:4] == ["Variant", "Accuracy", "Accuracy 95% CI", "Loss"]
    assert "| **b** (winner) | **0.900** |" in md
    # the chain compares on the file's objective: b's mean loss
    assert "| 1 | s | — | `b` | 0.200 | — | baseline | — |" in md


def test_a_tie_break_decision_is_stated(kit):
    objective = Objective("acc", "max", (("loss", "min"),))
    cells = _cells(kit, "a", [0.3, 0.3], [0.5, 0.5]) + _cells(kit, "b", [0.2, 0.2], [0.5, 0.5])
    s = kit.study(kit.spec("tie", {"a": {}, "b": {}}, seeds=[1, 2]), cells, objective)
    md = render_report(kit.report_input([s], METRICS, objective), jobs=1)["report.md"].decode()
    assert ("**Decided by:** the tie-break metric loss (lower is better) — `b` and runner-up `a` "
            "tie on mean acc 0.500; mean loss 0.200 vs 0.300.") in md
    assert "| **b** (winner) |" in md


def test_file_order_decision_is_stated(kit):
    objective = Objective("acc", "max", (("loss", "min"),))
    cells = _cells(kit, "first", [0.3], [0.5]) + _cells(kit, "second", [0.3], [0.5])
    s = kit.study(kit.spec("same", {"first": {}, "second": {}}), cells, objective)
    md = render_report(kit.report_input([s], METRICS, objective), jobs=1)["report.md"].decode()
    assert ("**Decided by:** study-file order — `first` and runner-up `second` tie on every mean "
            "(acc 0.500, loss 0.300); the variant listed first wins.") in md
    assert "| **first** (winner) |" in md


def _imports(tree: ast.AST, module: str) -> list[str]:
    """Absolute names of every import in ``tree``, lazy ones inside functions included."""
    package = module.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module)
    return names


def test_reports_imports_nothing_of_the_runner_and_names_no_metric():
    root = Path(reports.__file__).parent
    modules = sorted(root.rglob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "model", "format", "summary", "sections",
                                         "html", "figures"}
    allowed = ("ablations", "reports", "__future__", "pandas", "numpy", "matplotlib", "scipy",
               "markdown_it")
    for path in modules:
        module = "reports." + ".".join(path.relative_to(root).with_suffix("").parts)
        text = path.read_text(encoding="utf-8")
        for name in _imports(ast.parse(text), module):
            top = name.split(".")[0]
            assert top != "runner", f"{path.name} imports {name}"
            assert top in allowed or top in _stdlib(), f"{path.name} imports {name}"
        # a task's metric names come from the input, never from this package
        found = re.findall(r"\b(grader\w*|iou|si_logrmse|loss_\w+)\b", text, flags=re.I)
        assert not found, f"{path.name} names {found}"


def _stdlib() -> frozenset:
    import sys
    return frozenset(sys.stdlib_module_names)


def test_star_import_gives_the_public_api():
    namespace: dict = {}
    exec("from reports import *", namespace)
    assert {"render_report", "ReportInput", "StudyReport", "MetricInfo"} <= set(namespace)
    assert set(reports.__all__) <= set(namespace)
