"""Grids, variants, seeds, the chain and config precedence."""
import textwrap

import pytest

from ablations import (InputError, Pin, StudySpec, Variant, expand_study, flat, load_study_file,
                       load_task, profile_base, resolve_config)
from ablations.lineage import resolve_start_from, lineage
from ablations.grid import expand_grid
from ablations.seeds import normalize_seeds
from ablations.variants import derive_name, expand_variants, format_value
from ablations.yaml_source import LocatedError, parse_yaml


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_cartesian_and_names():
    variants = expand_grid({"optimizer": ["sgd", "adam"], "lr": [0.01, 1e-4]})
    assert [v.name for v in variants] == ["optimizer=sgd,lr=0.01", "optimizer=sgd,lr=0.0001",
                                          "optimizer=adam,lr=0.01", "optimizer=adam,lr=0.0001"]
    assert variants[3].overrides == {"optimizer": "adam", "lr": 1e-4}
    assert [v.name for v in expand_grid({"lr": [0.1]})] == ["lr=0.1"]
    # deterministic: same input, same names
    assert expand_grid({"a": [1, 2]}) == expand_grid({"a": [1, 2]})


def test_grid_list_of_subgrids():
    variants = expand_grid([{"optimizer": ["sgd"], "lr": [0.03]},
                            {"optimizer": ["adam"], "lr": [1e-5, 1e-4]}])
    assert [v.name for v in variants] == ["optimizer=sgd,lr=0.03", "optimizer=adam,lr=1e-05",
                                          "optimizer=adam,lr=0.0001"]


def test_value_formatting():
    assert format_value(True) == "true" and format_value(None) == "null"
    assert format_value([64, 128]) == "64x128" and format_value(2e-5) == "2e-05"
    assert derive_name({"crop_size": [64, 64], "encoder_weights": "/x/y.pt"}) == \
        "crop_size=64x64,encoder_weights=_x_y.pt"
    assert derive_name({}) == "baseline"


def test_grid_errors():
    with pytest.raises(LocatedError) as exc:
        expand_grid({"lr": []})
    assert exc.value.path == ("lr",)
    with pytest.raises(LocatedError) as exc:
        expand_grid({"lr": [0.1, 0.1]})
    assert exc.value.path == ("lr", 1)


def test_variants_names_and_duplicates():
    variants = expand_variants([{"name": "a", "set": {"lr": 0.1}}, {"set": {"batch_size": 2}}])
    assert [v.name for v in variants] == ["a", "batch_size=2"]
    with pytest.raises(LocatedError) as exc:
        expand_variants([{"name": "a", "set": {}}, {"name": "a", "set": {}}])
    assert exc.value.path == (1,)


def test_seeds():
    assert normalize_seeds(None) == [0]
    assert normalize_seeds(3) == [0, 1, 2]
    assert normalize_seeds([7, 3]) == [7, 3]
    for bad in (0, -1, [], [1, 1], [-2], True, "3", [1.5]):
        with pytest.raises(LocatedError):
            normalize_seeds(bad)


def test_seeds_in_file_expand_trials(tmp_path):
    path = write(tmp_path, """\
        name: exp
        studies:
          - name: a
            seeds: 3
            grid: {lr: [0.1, 0.01]}
          - name: b
            seeds: [5, 9]
            variants: [{name: x, set: {batch_size: 2}}]
        """)
    plan = load_study_file(path)
    assert plan.profile is None
    a, b = plan.studies
    trials = expand_study(a, profile_base(plan))
    assert [(t.variant, t.seed) for t in trials] == [
        ("lr=0.1", 0), ("lr=0.1", 1), ("lr=0.1", 2), ("lr=0.01", 0), ("lr=0.01", 1), ("lr=0.01", 2)]
    assert all(t.config.seed == t.seed for t in trials)
    assert len({t.config_hash for t in trials}) == 6
    assert [t.seed for t in expand_study(b, {})] == [5, 9]


def test_resolve_config_precedence():
    mtl = load_task("mtl")
    study = StudySpec(name="s", title="s", section="", description="", start_from=None,
                      pin=Pin({"lr": 0.2, "batch_size": 3}, "why"), seeds=[0], kind="variants",
                      variants=[], search=None, task=mtl, objective=mtl.objective)
    base = {"lr": 0.1, "batch_size": 2, "epochs": 5, "momentum": 0.5, "seed": 99}
    config = resolve_config(base, study, Variant("v", {"batch_size": 8}), seed=4)
    assert config.epochs == 5 and config.momentum == 0.5  # base
    assert config.lr == 0.2  # pin over base
    assert config.batch_size == 8  # variant over pin
    assert config.seed == 4  # seed over everything
    # resolving from a winner's flat config works too
    again = resolve_config(flat(config), study, Variant("w", {}), seed=4)
    assert again.batch_size == 3
    with pytest.raises(InputError, match="variant 'bad'"):
        resolve_config(base, study, Variant("bad", {"lr": -1}), seed=0)


def test_chain_helpers():
    assert resolve_start_from(["a", "b", "c"], [None, None, "a"]) == [None, "a", "a"]
    assert lineage({"a": None, "b": "a", "c": "b"}, "c") == ["a", "b", "c"]
    with pytest.raises(LocatedError) as exc:
        resolve_start_from(["a", "b"], [None, "c"])
    assert exc.value.path == (1,)
    with pytest.raises(LocatedError, match="later"):
        resolve_start_from(["a", "b"], ["b", None])


def test_pins_accumulate_along_chain(tmp_path):
    path = write(tmp_path, """\
        name: exp
        defaults: {lr: 0.01}
        studies:
          - name: a
            variants: [{name: x, set: {}}]
          - name: b
            pin: {set: {optimizer: adam, lr: 0.0001}, reason: stability}
            variants: [{name: y, set: {batch_size: 2}}]
        """)
    plan = load_study_file(path)
    b = plan.study("b")
    assert b.start_from == "a" and b.pin.reason == "stability"
    # the runner passes the winner's config of study a as the base
    winner = expand_study(plan.study("a"), profile_base(plan))[0].config
    trial = expand_study(b, flat(winner))[0]
    assert trial.config.optimizer == "adam" and trial.config.lr == 1e-4
    assert trial.config.batch_size == 2



def test_yaml_lines_and_floats():
    doc = parse_yaml("a:\n  b: [1, 2]\n  c:\n    - x: 1e-4\n", "f.yaml")
    assert doc.data == {"a": {"b": [1, 2], "c": [{"x": 1e-4}]}}
    assert doc.lines[("a",)] == 1 and doc.lines[("a", "b")] == 2
    assert doc.lines[("a", "c", 0, "x")] == 4
    assert doc.line_for(("a", "c", 0, "missing")) == 4


def test_profile_extends_and_trims(tmp_path):
    path = write(tmp_path, """\
        name: exp
        defaults: {epochs: 5}
        profiles:
          base:
            overrides: {epochs: 2, batch_size: 2}
            studies:
              a: {variants: [{name: x, set: {lr: 0.1}}, {name: y, set: {lr: 0.2}}, {name: z}]}
          child:
            extends: base
            overrides: {epochs: 1}
            studies:
              a: {only: [y], seeds: [3]}
          grid:
            extends: base
            studies:
              a: {grid: {momentum: [0.5, 0.9]}}
        studies:
          - name: a
            grid: {lr: [0.5]}
            report:
              "lr=0.5": {grader: 1, iou: 50, si_logrmse: 49, time: 6:45}
        """)
    plain = load_study_file(path)
    assert plain.profile is None and [v.name for v in plain.studies[0].variants] == ["lr=0.5"]
    assert plain.studies[0].report["lr=0.5"]["time"] == "6:45"  # unquoted h:mm stays text
    base = load_study_file(path, "base")
    assert [v.name for v in base.studies[0].variants] == ["x", "y", "z"]
    assert base.studies[0].kind == "variants"
    child = load_study_file(path, "child")
    assert profile_base(child) == {"epochs": 1, "batch_size": 2}
    assert [v.name for v in child.studies[0].variants] == ["y"]  # only over the parent's design
    assert child.studies[0].seeds == [3]
    grid = load_study_file(path, "grid")
    assert [v.name for v in grid.studies[0].variants] == ["momentum=0.5", "momentum=0.9"]


WINNER_CHAIN = """\
    name: exp
    defaults: {lr: 0.01}
    studies:
      - name: w
        variants: [{name: noseg, set: {loss_weight_seg: 0}}]
      - name: x
        variants:
          - {name: ok, set: {lr: 0.1}}
          - name: nodepth
            set:
              lr: 0.2
              loss_weight_depth: 0
      - name: g
        start_from: w
        grid: {loss_weight_depth: [0.5, 0.0]}
      - name: p
        start_from: w
        pin: {set: {loss_weight_depth: 0.0}, reason: depth off}
        variants: [{name: v, set: {batch_size: 2}}]
      - name: s
        start_from: w
        search:
          n_trials: 2
          space: {loss_weight_depth: {type: categorical, choices: [0.0, 1.0]}}
    """


@pytest.mark.parametrize("study, variant, line, key", [
    ("x", None, 12, "studies[1].variants[1].set.loss_weight_depth"),   # the variant's value
    ("g", None, 15, "studies[2].grid.loss_weight_depth[1]"),             # the grid value
    ("p", None, 18, "studies[3].pin.set.loss_weight_depth"),             # the pin's value
    ("s", "search", 24, "studies[4].search.space.loss_weight_depth"),   # the search axis
])
def test_an_error_known_only_on_the_winner_names_file_line_and_key(tmp_path, study, variant, line, key):
    """Valid on the profile base, invalid on the winner of 'w' (seg weight 0): the error names
    the study file, the line and key of the value that breaks it, the study and the variant."""
    from ablations import StudyFileError, search_variant

    path = write(tmp_path, WINNER_CHAIN)
    plan = load_study_file(path)
    winner = flat(expand_study(plan.study("w"), profile_base(plan))[0].config)
    spec = plan.study(study)
    with pytest.raises(StudyFileError) as caught:
        if variant == "search":
            resolve_config(winner, spec, search_variant({"loss_weight_depth": 0.0}, 3), seed=0)
        else:
            expand_study(spec, winner)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: study '{study}', variant '"), message
    assert "invalid config on the winner of 'w': loss_weight_seg + loss_weight_depth must be > 0" in message
    assert isinstance(caught.value, InputError) and (caught.value.file, caught.value.line) == (str(path), line)


def test_a_merged_mapping_is_overridden_by_explicit_keys(tmp_path):
    """YAML's merge key: ``{<<: *base, lr: 0.2}`` takes base's keys and overrides lr (it was
    refused as a duplicate key); of several merged maps the first one listed wins."""
    path = write(tmp_path, """\
        name: exp
        defaults: &base {lr: 0.1, momentum: 0.5}
        studies:
          - name: s
            variants:
              - {name: a, set: {<<: *base, lr: 0.2}}
              - name: b
                set:
                  <<: [{lr: 0.3}, *base]
                  batch_size: 2
        """)
    a, b = load_study_file(path).study("s").variants
    assert a.overrides == {"lr": 0.2, "momentum": 0.5}
    assert b.overrides == {"lr": 0.3, "momentum": 0.5, "batch_size": 2}


def test_a_grid_search_axis_is_counted_without_being_listed():
    """An int axis of 10**12 points is refused by its count: listing it first (as before) would
    take terabytes."""
    from ablations.search import MAX_GRID_POINTS, SearchParam, axis_size, grid_size

    huge = SearchParam("int", 0, 10**12)
    assert axis_size(huge) == 10**12 + 1
    assert grid_size({"a": huge, "b": SearchParam("uniform", 0.0, 1.0, 0.25)}) == 5 * (10**12 + 1)
    assert grid_size({"a": SearchParam("int", 1, 3)}) < MAX_GRID_POINTS
