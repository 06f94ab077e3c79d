"""search: studies map onto real optuna objects."""
import pytest

optuna = pytest.importorskip("optuna")

from ablations import (SearchParam, SearchSpec, make_pruner, make_sampler,
                       resolve_config, search_variant, suggest_params, load_study_file)

SPACE = {
    "lr": SearchParam("loguniform", 1e-5, 1e-1),
    "momentum": SearchParam("uniform", 0.5, 0.95),
    "weight_decay": SearchParam("uniform", 0.0, 0.001, step=0.0005),
    "batch_size": SearchParam("int", 2, 8, 2),
    "optimizer": SearchParam("categorical", choices=("sgd", "adam")),
    "crop_size": SearchParam("categorical", choices=([64, 64], [64, 128])),
}


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_suggest_params_with_real_study(sampler):
    search = SearchSpec(sampler=sampler, n_trials=4, space=SPACE, pruner="median")
    study = optuna.create_study(direction="maximize", sampler=make_sampler(search, seed=0),
                                pruner=make_pruner(search))
    for _ in range(4):
        trial = study.ask()
        params = suggest_params(search, trial)
        assert 1e-5 <= params["lr"] <= 1e-1
        assert 0.5 <= params["momentum"] <= 0.95
        assert params["weight_decay"] in (0.0, 0.0005, 0.001)
        assert params["batch_size"] in (2, 4, 6, 8) and isinstance(params["batch_size"], int)
        assert params["optimizer"] in ("sgd", "adam")
        assert params["crop_size"] in ([64, 64], [64, 128])
        variant = search_variant(params, trial.number)
        assert variant.name == f"trial{trial.number:04d}"
        from ablations import StudySpec, load_task
        mtl = load_task("mtl")
        spec = StudySpec("s", "s", "", "", None, None, [0], "search", [], search, mtl, mtl.objective)
        config = resolve_config({}, spec, variant, seed=1)
        assert config.lr == params["lr"] and tuple(config.crop_size) == tuple(params["crop_size"])
        trial.report(1.0, step=0)
        study.tell(trial, 1.0)
    assert len(study.trials) == 4


def test_grid_sampler_covers_space():
    search = SearchSpec(sampler="grid", n_trials=4, space={
        "optimizer": SearchParam("categorical", choices=("sgd", "adam")),
        "batch_size": SearchParam("int", 2, 4, 2)})
    study = optuna.create_study(sampler=make_sampler(search, seed=0))
    seen = set()

    def objective(trial):  # GridSampler stops the study itself: use optimize, not ask/tell
        p = suggest_params(search, trial)
        seen.add((p["optimizer"], p["batch_size"]))
        return 0.0

    study.optimize(objective, n_trials=10)
    assert len(study.trials) == 4
    assert seen == {("sgd", 2), ("sgd", 4), ("adam", 2), ("adam", 4)}


def test_sampler_and_pruner_types():
    s = SearchSpec(space={"lr": SearchParam("loguniform", 1e-5, 1e-1)})
    from dataclasses import replace
    assert isinstance(make_sampler(replace(s, sampler="tpe"), 1), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(replace(s, sampler="random"), 1), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler(replace(s, sampler="cmaes"), 1), optuna.samplers.CmaEsSampler)
    assert isinstance(make_pruner(replace(s, pruner="none")), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(replace(s, pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(replace(s, pruner="hyperband")), optuna.pruners.HyperbandPruner)


def test_search_from_file_and_trim_merge(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""\
name: exp
default_profile: quick
profiles:
  quick:
    studies:
      tune: {search: {n_trials: 2}}
studies:
  - name: tune
    search:
      sampler: random
      n_trials: 20
      space:
        lr: {type: loguniform, low: 1.0e-5, high: 0.1}
        epochs: {type: int, low: 1, high: 3}
""")
    full = load_study_file(path, None)
    quick = load_study_file(path, "quick")
    assert full.profile == "quick"  # default_profile
    assert quick.study("tune").search.n_trials == 2
    assert quick.study("tune").search.sampler == "random"
    assert quick.study("tune").search.space["epochs"] == SearchParam("int", 1, 3, 1)
    study = optuna.create_study(sampler=make_sampler(quick.study("tune").search, seed=0))
    params = suggest_params(quick.study("tune").search, study.ask())
    assert set(params) == {"lr", "epochs"}


def test_a_child_profiles_search_trim_is_merged_over_its_parents(tmp_path):
    """extends: the parent's search trim applies first, the child's keys on top of it."""
    path = tmp_path / "s.yaml"
    path.write_text("""\
name: exp
profiles:
  parent:
    studies:
      tune: {search: {n_trials: 3, sampler: random}}
  child:
    extends: parent
    studies:
      tune: {search: {n_trials: 2}}
studies:
  - name: tune
    search:
      sampler: tpe
      n_trials: 20
      pruner: median
      space:
        lr: {type: loguniform, low: 1.0e-5, high: 0.1}
""")
    parent = load_study_file(path, "parent").study("tune").search
    child = load_study_file(path, "child").study("tune").search
    assert (parent.n_trials, parent.sampler, parent.pruner) == (3, "random", "median")
    assert (child.n_trials, child.sampler, child.pruner) == (2, "random", "median")


@pytest.mark.parametrize("where", ["study", "profile trim"])
def test_search_study_with_several_seeds_is_refused_with_file_line_and_key(tmp_path, where):
    """Each Optuna trial trains one seed: extra seeds would be ignored, so they are an error."""
    from ablations.errors import StudyFileError

    study_seeds = "    seeds: 3\n" if where == "study" else ""
    trim = "    studies:\n      tune: {seeds: [0, 1]}\n" if where == "profile trim" else ""
    path = tmp_path / "s.yaml"
    path.write_text(f"""\
name: exp
profiles:
  p:
{trim or "    overrides: {}" + chr(10)}studies:
  - name: tune
{study_seeds}    search:
      n_trials: 4
      space:
        lr: {{type: loguniform, low: 1.0e-5, high: 0.1}}
""")
    with pytest.raises(StudyFileError) as info:
        load_study_file(path, "p")
    err = info.value
    lines = path.read_text().splitlines()
    assert "seeds" in lines[err.line - 1], (err.line, lines)
    assert err.key.endswith("seeds")
    assert "search study" in err.message and "single seed" in err.message
