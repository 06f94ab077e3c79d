"""The real studies.yaml: 13 studies in the report's order, for every profile."""
from pathlib import Path

import pytest

from ablations import Objective, expand_study, load_study_file, profile_base

STUDIES_YAML = Path(__file__).resolve().parents[2] / "studies.yaml"
ORDER = ["optimizer_lr", "batch_size", "task_weighting", "pretraining", "dilation", "aspp_skip",
         "branched", "distillation", "log_depth", "upconv", "skip2x", "se_distillation",
         "final_tuning"]
FULL_COUNTS = {"optimizer_lr": 8, "batch_size": 3, "task_weighting": 7, "final_tuning": 3}
REPORT_BEST = {  # SPEC §1: the report's best per study (grader, IoU, SI-logRMSE)
    "optimizer_lr": ("optimizer=adam,lr=0.0001", 43.125, 69.481, 26.356),
    "task_weighting": ("seg6_depth4", 43.542, 70.188, 26.645),
    "pretraining": ("imagenet", 47.455, 73.020, 25.564),
    "dilation": ("dilation", 58.319, 80.152, 21.833),
    "aspp_skip": ("aspp_skip", 65.527, 85.313, 19.787),
    "branched": ("branched", 67.524, 85.623, 18.099),
    "distillation": ("distillation", 69.592, 86.246, 16.654),
    "log_depth": ("log", 70.504, 86.118, 15.614),
    "upconv": ("upconv", 71.265, 86.428, 15.163),
    "skip2x": ("upconv_skip2x", 71.971, 86.81, 14.939),
    "se_distillation": ("distillation_se", 72.215, 87.227, 15.013),
    "final_tuning": ("lr=5e-05,epochs=24", 74.378, 88.321, 13.943),
}


@pytest.fixture(scope="module", params=[None, "smoke", "full", "search-demo"])
def plan(request):
    return load_study_file(STUDIES_YAML, request.param)


def test_order_and_chain(plan):
    assert [s.name for s in plan.studies] == ORDER
    assert plan.name == "dlad-mtl"
    assert plan.studies[0].start_from is None
    for prev, study in zip(plan.studies, plan.studies[1:]):
        assert study.start_from == prev.name
    assert all(s.title and s.section for s in plan.studies)


def test_default_profile_is_smoke():
    assert load_study_file(STUDIES_YAML).profile == "smoke"


def test_the_task_is_mtl_and_decides_on_the_grader(plan):
    """No ``task:`` in studies.yaml: the built-in task for the plan and every study. The full
    profile decides on the task's default objective (grader, ties broken by the unclamped grader);
    the smoke profiles on the unclamped grader (ties: IoU), because after a few dozen CPU steps the
    course grader floors both of its terms to 0 for every variant."""
    assert plan.task.name == "mtl" and plan.task.Config.__module__ == "runner.tasks.mtl.config"
    if plan.profile == "full":
        assert plan.objective == Objective("grader", "max", (("grader_unclamped", "max"),))
    else:
        assert plan.objective == Objective("grader_unclamped", "max", (("iou", "max"),))
    assert all(s.task is plan.task and s.objective == plan.objective for s in plan.studies)


def test_pin_with_reason(plan):
    pins = {s.name: s.pin for s in plan.studies if s.pin is not None}
    assert list(pins) == ["batch_size"]
    assert pins["batch_size"].set == {"optimizer": "adam", "lr": 0.0001}
    assert "stability" in pins["batch_size"].reason and "44.36" in pins["batch_size"].reason


def test_report_numbers(plan):
    """Keyed by the task's metric names (plus params and time)."""
    for name, (variant, grader, iou, si) in REPORT_BEST.items():
        numbers = plan.study(name).report[variant]
        assert (numbers["grader"], numbers["iou"], numbers["si_logrmse"]) == pytest.approx((grader, iou, si))
    branched = plan.study("branched").report
    assert branched["joint"]["params"] == 26_749_396 and branched["branched"]["params"] == 32_142_356
    assert plan.study("distillation").report["distillation"]["params"] == 37_095_656
    assert plan.study("distillation").report["distillation"]["time"] == "17:06"
    assert plan.study("aspp_skip").report["plain"]["time"] == "4:50"
    assert len(plan.study("optimizer_lr").report) == 8
    assert len(plan.study("task_weighting").report) == 7


def test_full_profile():
    plan = load_study_file(STUDIES_YAML, "full")
    for study in plan.studies:
        assert study.kind in ("grid", "variants")
        assert len(study.variants) == FULL_COUNTS.get(study.name, 2)
        assert study.seeds == [0]
    base = profile_base(plan)
    assert base["data_root"] == "~/miniscapes" and base["crop_size"] == [256, 256]
    assert base["head"] == "plain" and base["decoder"] == "none" and base["epochs"] == 16
    pre = {v.name: v.overrides for v in plan.study("pretraining").variants}
    assert pre["imagenet"] == {"encoder_weights": "imagenet"}
    batch = {v.name: v.overrides for v in plan.study("batch_size").variants}
    assert batch == {"batch2": {"batch_size": 2, "epochs": 8}, "batch4": {"batch_size": 4, "epochs": 16},
                     "batch8": {"batch_size": 8, "epochs": 32}}
    final = plan.study("final_tuning")
    assert final.kind == "grid"
    assert [v.overrides for v in final.variants] == [{"lr": 2e-5, "epochs": 24},
                                                     {"lr": 5e-5, "epochs": 24},
                                                     {"lr": 1e-4, "epochs": 24}]
    tw = {v.name: v.overrides for v in plan.study("task_weighting").variants}
    assert tw["seg6_depth4"] == {"loss_weight_seg": 0.6, "loss_weight_depth": 0.4}


def test_smoke_profile():
    plan = load_study_file(STUDIES_YAML, "smoke")
    assert all(1 <= len(s.variants) <= 2 for s in plan.studies)
    assert all(s.seeds == [0, 1] for s in plan.studies)  # 2 seeds each: the claims get a verdict
    assert [v.name for v in plan.study("optimizer_lr").variants] == [
        "optimizer=sgd,lr=0.03", "optimizer=adam,lr=0.0001"]
    pre = {v.name: v.overrides for v in plan.study("pretraining").variants}
    assert pre["imagenet"] == {"encoder_weights": "synthetic-pretrained"}
    base = profile_base(plan)
    assert base["data_root"] == "synthetic" and base["encoder"] == "resnet18"
    assert base["epochs"] == 3 and base["crop_size"] == [32, 64] and base["synthetic_size"] == [64, 128]
    assert (base["head_channels"], base["upconv_channels"]) == (64, 32)
    trials = [t for s in plan.studies for t in expand_study(s, base)]
    assert len(trials) == 2 * 13 * 2  # 2 variants each, 2 seeds each
    assert all(t.config.encoder == "resnet18" for t in trials)
    # the same config in two studies has the same hash (the runner may reuse the result)
    by_key = {(t.study, t.variant, t.seed): t.config_hash for t in trials}
    assert by_key[("pretraining", "random", 0)] == by_key[("dilation", "no_dilation", 0)]
    assert by_key[("pretraining", "random", 0)] != by_key[("pretraining", "imagenet", 0)]


def test_search_demo_profile():
    plan = load_study_file(STUDIES_YAML, "search-demo")
    study = plan.study("optimizer_lr")
    assert study.kind == "search" and study.variants == [] and study.seeds == [0]
    assert study.search.sampler == "tpe" and study.search.pruner == "median"
    assert study.search.n_trials == 6
    assert study.search.space["lr"].type == "loguniform"
    assert study.search.space["optimizer"].choices == ("sgd", "adam")
    with pytest.raises(ValueError, match="search"):
        expand_study(study, profile_base(plan))
    # the rest is smoke
    assert plan.study("task_weighting").seeds == [0, 1]


def test_import_is_light():
    """``import ablations``, ``from ablations import *`` (every public name) and loading the study
    file with its task (mtl) import neither optuna, torch nor mlflow."""
    import subprocess
    import sys
    code = ("import sys, ablations\n"
            "from ablations import *\n"
            "missing = [n for n in ablations.__all__ if n not in globals()]; assert not missing, missing\n"
            "assert load_study_file('studies.yaml').task.name == 'mtl'\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('optuna', 'torch', 'torchvision', 'mlflow')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=STUDIES_YAML.parent)
