"""Broken study files: every mistake is a StudyFileError naming the file, the line and the key."""
import pytest

from ablations import InputError, StudyFileError, load_study_file

# line numbers of BASE, for reading the cases below
BASE = """\
name: exp
defaults:
  lr: 0.01
default_profile: smoke
profiles:
  smoke:
    overrides:
      epochs: 1
    studies:
      s1:
        seeds: 1
studies:
  - name: s1
    grid:
      lr: [0.01, 0.1]
  - name: s2
    start_from: previous
    variants:
      - {name: a, set: {batch_size: 2}}
      - {name: b, set: {batch_size: 4}}
"""
#  1 name  2 defaults  3 lr  4 default_profile  5 profiles  6 smoke  7 overrides  8 epochs
#  9 studies (trims)  10 s1  11 seeds  12 studies  13 - name: s1  14 grid  15 lr  16 - name: s2
# 17 start_from  18 variants  19 - a  20 - b

SEARCH = "    search:\n      sampler: tpe\n      n_trials: 4\n      space:\n"  # lines 14-17


def edit(**lines: str) -> str:
    """BASE with some lines replaced: edit(l15="...") (a replacement may span several lines)."""
    out = BASE.splitlines()
    for key, text in sorted(lines.items(), key=lambda kv: -int(kv[0][1:])):
        n = int(key[1:])
        out[n - 1:n] = text.splitlines() if text else []
    return "\n".join(out) + "\n"


def search_case(param_line: str, sampler: str = "tpe", n_trials: str = "4") -> str:
    block = (f"    search:\n      sampler: {sampler}\n      n_trials: {n_trials}\n      space:\n"
             f"        {param_line}")
    return edit(l14=block, l15="")  # lines 14-18


# 100 x 100 grid x 1000 seeds: 10 million trials (line 4: seeds)
BIG_GRID = ("name: exp\nstudies:\n  - name: s1\n    seeds: 1000\n    grid:\n"
            f"      lr: [{', '.join(str(round(0.001 * (i + 1), 3)) for i in range(100))}]\n"
            f"      momentum: [{', '.join(str(round(0.001 * i, 3)) for i in range(100))}]\n")

# (id, file text, expected line, expected key (substring), other expected substrings, profile)
CASES = [
    ("yaml-syntax", edit(l3="  lr: 0.01: 2"), 3, None, ["YAML syntax error"], None),
    ("yaml-unclosed-flow", edit(l19="      - {name: a, set: {batch_size: 2}"), 20, None,
     ["YAML syntax error"], None),
    ("yaml-tab-indent", edit(l8="\tepochs: 1"), 8, None, ["YAML"], None),
    ("duplicate-yaml-key", edit(l3="  lr: 0.01\n  lr: 0.02"), 4, "defaults.lr",
     ["duplicate key 'lr'", "line 3"], None),
    ("empty-file", "", 1, None, ["empty"], None),
    ("top-level-list", "- name: exp\n- studies: []\n", 1, None, ["mapping"], None),
    ("top-level-scalar", "just text\n", 1, None, ["mapping"], None),
    ("unknown-top-key", edit(l1="name: exp\ncolour: red"), 2, "colour", ["unknown key"], None),
    ("misspelt-top-key", edit(l2="defualts:"), 2, "defualts", ["did you mean 'defaults'"], None),
    ("misspelt-config-key", edit(l3="  batch_sise: 4"), 3, "defaults.batch_sise",
     ["unknown key 'batch_sise'", "did you mean 'batch_size'"], None),
    ("misspelt-study-key", edit(l17="    strat_from: previous"), 17, "studies[1].strat_from",
     ["did you mean 'start_from'"], None),
    ("config-key-at-study-level", edit(l17="    lr: 0.1"), 17, "studies[1].lr",
     ["config keys go under"], None),
    ("misspelt-grid-key", edit(l15="      lr_rate: [0.01]"), 15, "studies[0].grid.lr_rate",
     ["unknown key 'lr_rate'"], None),
    ("missing-name", edit(l1=""), 1, "name", ["required"], None),
    ("wrong-type-seeds", edit(l11="        seeds: many"), 11, "profiles.smoke.studies.s1.seeds",
     ["seeds"], None),
    ("wrong-type-title", edit(l17="    title: [a, b]"), 17, "studies[1].title",
     ["valid string"], None),
    ("wrong-type-n-trials", search_case("lr: {type: loguniform, low: 0.001, high: 0.1}",
                                        n_trials="ten"), 16, "studies[0].search.n_trials",
     ["integer"], None),
    ("wrong-type-variants", edit(l18="    variants: {a: 1}", l19="", l20=""), 18,
     "studies[1].variants", ["list"], None),
    ("empty-grid", edit(l14="    grid: {}", l15=""), 14, "studies[0].grid",
     ["at least one key"], None),
    ("empty-grid-axis", edit(l15="      lr: []"), 15, "studies[0].grid.lr", ["empty"], None),
    ("grid-scalar-axis", edit(l15="      lr: 0.1"), 15, "studies[0].grid.lr", ["must be a list"],
     None),
    ("unknown-start-from", edit(l17="    start_from: s3"), 17, "studies[1].start_from",
     ["unknown study 's3'"], None),
    ("misspelt-start-from", edit(l17="    start_from: s11"), 17, "studies[1].start_from",
     ["did you mean 's1'"], None),
    ("cycle-later-study", edit(l13="  - name: s1\n    start_from: s2"), 14,
     "studies[0].start_from", ["later"], None),
    ("cycle-self", edit(l17="    start_from: s2"), 17, "studies[1].start_from", ["cycle"], None),
    ("first-from-previous", edit(l13="  - name: s1\n    start_from: previous"), 14,
     "studies[0].start_from", ["first study"], None),
    ("duplicate-study", edit(l16="  - name: s1"), 16, "studies[1].name",
     ["duplicate study name 's1'", "line 13"], None),
    ("duplicate-variant", edit(l20="      - {name: a, set: {batch_size: 4}}"), 20,
     "studies[1].variants[1]", ["duplicate variant name 'a'"], None),
    ("duplicate-grid-value", edit(l15="      lr: [0.1, 0.1]"), 15, "studies[0].grid.lr[1]",
     ["twice"], None),
    ("negative-lr-defaults", edit(l3="  lr: -0.01"), 3, "defaults.lr", ["greater than 0"], None),
    ("negative-lr-grid", edit(l15="      lr: [0.01,\n           -0.1]"), 16,
     "studies[0].grid.lr[1]", ["greater than 0"], None),
    ("zero-seeds", edit(l11="        seeds: 0"), 11, "profiles.smoke.studies.s1.seeds",
     [">= 1"], None),
    ("negative-seed", edit(l13="  - name: s1\n    seeds: [0, -3]"), 14, "studies[0].seeds[1]",
     [">= 0"], None),
    ("search-low-gt-high", search_case("lr: {type: uniform, low: 0.5, high: 0.1}"), 18,
     "studies[0].search.space.lr.low", ["<= high"], None),
    ("search-loguniform-zero", search_case("lr: {type: loguniform, low: 0, high: 0.1}"), 18,
     "studies[0].search.space.lr.low", ["low > 0"], None),
    ("search-unknown-type", search_case("lr: {type: normal, low: 0.1, high: 0.5}"), 18,
     "studies[0].search.space.lr.type", ["loguniform"], None),
    ("search-unknown-key", search_case("momentun: {type: uniform, low: 0.1, high: 0.5}"),
     18, "studies[0].search.space.momentun", ["did you mean 'momentum'"], None),
    ("search-bad-choice", search_case("architecture: {type: categorical, choices: [joint, tree]}"),
     18, "studies[0].search.space.architecture.choices[1]", ["tree"], None),
    ("search-int-fraction", search_case("epochs: {type: int, low: 1, high: 2.5}"), 18,
     "studies[0].search.space.epochs.high", ["integer"], None),
    ("unknown-sampler", search_case("lr: {type: uniform, low: 0.01, high: 0.1}",
                                    sampler="bayes"), 15, "studies[0].search.sampler",
     ["'tpe'"], None),
    ("grid-sampler-continuous", search_case("lr: {type: loguniform, low: 0.001, high: 0.1}",
                                            sampler="grid"), 18,
     "studies[0].search.space.lr", ["continuous"], None),
    ("unknown-default-profile", edit(l4="default_profile: smok"), 4, "default_profile",
     ["unknown profile 'smok'", "did you mean 'smoke'"], None),
    ("unknown-cli-profile", BASE, 5, "profiles", ["unknown profile 'ful'"], "ful"),
    ("unknown-config-value", edit(l19="      - {name: a, set: {architecture: tree}}"), 19,
     "studies[1].variants[0].set.architecture", ["tree"], None),
    ("bad-crop-in-overrides", edit(l8="      crop_size: [100, 100]"), 8,
     "profiles.smoke.overrides.crop_size", ["multiples of 32"], None),
    ("zero-loss-weights-variant",
     edit(l20="      - {name: b, set: {loss_weight_seg: 0, loss_weight_depth: 0}}"), 20,
     "studies[1].variants[1]", ["loss_weight_seg + loss_weight_depth"], None),
    ("seed-in-set", edit(l19="      - {name: a, set: {seed: 3}}"), 19,
     "studies[1].variants[0].set.seed", ["seeds"], None),
    ("study-name-traversal", edit(l13="  - name: ../evil"), 13, "studies[0].name",
     ["invalid study name"], None),
    ("study-name-slash", edit(l16="  - name: a/b"), 16, "studies[1].name", ["invalid"], None),
    ("variant-name-traversal", edit(l19="      - {name: ../x, set: {batch_size: 2}}"), 19,
     "studies[1].variants[0].name", ["invalid variant name"], None),
    ("experiment-name-traversal", edit(l1="name: ../../etc"), 1, "name",
     ["invalid experiment name"], None),
    ("profile-name-traversal", edit(l6="  ../smoke:", l4="default_profile: ../smoke"), 6,
     "profiles.../smoke", ["invalid profile name"], None),
    ("trim-unknown-study", edit(l10="      s9:"), 10, "profiles.smoke.studies.s9",
     ["unknown study 's9'"], None),
    ("trim-misspelt-field", edit(l11="        seed: 1"), 11, "profiles.smoke.studies.s1.seed",
     ["did you mean 'seeds'"], None),
    ("trim-only-unknown-variant", edit(l11="        only: [lr=0.01, lr=0.5]"), 11,
     "profiles.smoke.studies.s1.only[1]", ["no variant 'lr=0.5'"], None),
    ("trim-two-designs", edit(l11="        only: [lr=0.01]\n        grid: {lr: [0.2]}"), 12,
     "profiles.smoke.studies.s1.grid", ["at most one"], None),
    ("grid-and-variants", edit(l15="      lr: [0.01, 0.1]\n    variants:\n      - {name: x}"), 16,
     "studies[0].variants", ["exactly one of grid, variants, search"], None),
    ("neither-grid-nor-variants", edit(l14="    title: nothing", l15=""), 13, "studies[0]",
     ["exactly one of grid, variants or search"], None),
    ("no-studies", edit(l12="studies: []", l13="", l14="", l15="", l16="", l17="", l18="",
                        l19="", l20="", l10="", l11="", l9=""), 9, "studies",
     ["at least one study"], None),
    ("pin-without-reason", edit(l17="    pin: {set: {lr: 0.1}}"), 17, "studies[1].pin.reason",
     ["required"], None),
    ("pin-empty-reason", edit(l17="    pin: {set: {lr: 0.1}, reason: '  '}"), 17,
     "studies[1].pin.reason", ["non-empty reason"], None),
    ("pin-bad-value", edit(l17="    pin:\n      set: {optimizer: rmsprop}\n      reason: x"), 18,
     "studies[1].pin.set.optimizer", ["rmsprop"], None),
    ("report-unknown-variant", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                                        "      c: {grader: 1, iou: 2, si_logrmse: 3}"), 22,
     "studies[1].report.c", ["unknown variant 'c'"], None),
    ("report-bad-time", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                                  "      b: {grader: 1, iou: 2, si_logrmse: 3, time: 645}"), 22,
     "studies[1].report.b.time", ["string"], None),
    # report numbers are keyed by the task's metric names (+ params, time): finite, and at least one
    ("report-no-metric", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                                   "      b: {params: 3, time: \"1:00\"}"), 22,
     "studies[1].report.b", ["at least one of task 'mtl' metrics", "grader"], None),
    ("report-unknown-metric", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                                        "      b: {gradr: 1, iou: 2}"), 22,
     "studies[1].report.b.gradr", ["unknown key 'gradr'", "did you mean 'grader'"], None),
    ("report-nan", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                             "      b: {grader: .nan}"), 22,
     "studies[1].report.b.grader", ["finite"], None),
    ("report-text-number", edit(l20="      - {name: b, set: {batch_size: 4}}\n    report:\n"
                                     "      b: {iou: '70'}"), 22,
     "studies[1].report.b.iou", ["finite number", "'70'"], None),
    # task: and objective: (top level, profile, study), each located with a suggestion
    ("task-not-a-string", edit(l1="name: exp\ntask: [mtl]"), 2, "task", ["task must be"], None),
    ("task-cannot-import", edit(l1="name: exp\ntask: no_such_task_module"), 2, "task",
     ["cannot import module 'no_such_task_module'"], None),
    ("objective-unknown-metric", edit(l1="name: exp\nobjective: gradr"), 2, "objective",
     ["unknown metric 'gradr'", "did you mean 'grader'"], None),
    ("objective-misspelt-key", edit(l1="name: exp\nobjective: {metrc: iou}"), 2,
     "objective.metrc", ["did you mean 'metric'"], None),
    ("objective-bad-goal", edit(l17="    objective: {metric: iou, goal: up}"), 17,
     "studies[1].objective.goal", ["'max' or 'min'", "'up'"], None),
    ("objective-unknown-tie-break", edit(l7="    objective: {metric: iou, tie_break: [grader, si_logrmsee]}\n"
                                            "    overrides:"), 7,
     "profiles.smoke.objective.tie_break[1]", ["unknown metric 'si_logrmsee'", "did you mean 'si_logrmse'"],
     None),
    ("extends-unknown", edit(l7="    extends: base\n    overrides:"), 7,
     "profiles.smoke.extends", ["unknown profile 'base'"], None),
    # 'other' comes first and reaches the unknown parent through 'smoke' (was a bare KeyError)
    ("section-number", edit(l13="  - name: s1\n    section: 1.10"), 14, "studies[0].section",
     ["quote it"], None),
    ("extends-unknown-through-a-parent", edit(l6="  other:\n    extends: smoke\n  smoke:\n    extends: zzz"), 9,
     "profiles.smoke.extends", ["unknown profile 'zzz'"], None),
    ("extends-cycle", edit(l6="  other:\n    extends: smoke\n  smoke:\n    extends: other"), 9,
     "extends", ["cycle"], None),
    ("python-tag", edit(l3="  lr: !!python/object/apply:os.system [echo hi]"), 3, "defaults.lr",
     ["unsupported YAML tag"], None),
    ("python-scalar-tag", edit(l3="  lr: !!python/name:os.system ''"), 3, None,
     ["unsupported YAML", "python"], None),
    ("non-bool-amp", edit(l8="      amp: maybe"), 8, "profiles.smoke.overrides.amp",
     ["maybe"], None),
    # values of the wrong type are refused, not coerced (a coerced value was stored as written)
    ("quoted-lr", edit(l3="  lr: '0.01'"), 3, "defaults.lr", ["0.01"], None),
    ("yes-for-amp", edit(l8="      amp: 'yes'"), 8, "profiles.smoke.overrides.amp", ["yes"], None),
    ("fractional-epochs", edit(l8="      epochs: 2.0"), 8, "profiles.smoke.overrides.epochs", ["2.0"], None),
    # non-finite numbers: JSON stores them as null, which every later resolve refused (issue 11)
    ("inf-in-defaults", edit(l3="  lr: .inf"), 3, "defaults.lr", ["finite", "inf"], None),
    ("nan-in-grid", edit(l15="      lr: [0.01, .nan]"), 15, "studies[0].grid.lr[1]", ["finite"], None),
    ("inf-in-tuple-element", edit(l19="      - {name: a, set: {augment_scale: [0.5, -.inf]}}"), 19,
     "studies[1].variants[0].set.augment_scale[1]", ["finite"], None),
    ("nan-in-pin", edit(l17="    pin: {set: {momentum: .nan}, reason: x}"), 17,
     "studies[1].pin.set.momentum", ["finite"], None),
    ("inf-in-overrides", edit(l8="      weight_decay: .inf"), 8, "profiles.smoke.overrides.weight_decay",
     ["finite"], None),
    ("inf-search-bound", search_case("lr: {type: uniform, low: 0.001, high: .inf}"), 18,
     "studies[0].search.space.lr.high", ["finite"], None),
    ("nan-search-step", search_case("momentum: {type: uniform, low: 0.1, high: 0.5, step: .nan}"), 18,
     "studies[0].search.space.momentum.step", ["finite"], None),
    # sizes that would end in a MemoryError or expand millions of trials in memory (issue 11)
    ("huge-synthetic-size", edit(l8="      synthetic_size: [60000, 60000]"), 8,
     "profiles.smoke.overrides.synthetic_size[0]", ["2048", "60000"], None),
    ("grid-times-seeds-over-cap", BIG_GRID, 4, "studies[0].seeds",
     ["10,000 variants x 1,000 seeds = 10,000,000 trials", "at most 10,000"], None),
    ("trim-seeds-over-cap", edit(l11="        seeds: 1000", l15="      lr: [" + ", ".join(
        str(round(0.001 * (i + 1), 3)) for i in range(20)) + "]"), 11, "profiles.smoke.studies.s1.seeds",
     ["20,000 trials", "at most 10,000"], None),
    ("seed-list-over-cap", edit(l13="  - name: s1\n    seeds: [" + ", ".join(map(str, range(1001))) + "]"),
     14, "studies[0].seeds", ["at most 1000 seeds"], None),
    ("n-trials-over-cap", search_case("lr: {type: uniform, low: 0.01, high: 0.1}", n_trials="1000000"), 16,
     "studies[0].search.n_trials", ["10,000", "1,000,000"], None),
    # a merged mapping's keys may be overridden (YAML's merge spec); explicit twice stays an error
    ("duplicate-key-beside-a-merge", edit(l19="      - {name: a, set: {<<: {lr: 0.1}, batch_size: 2, "
                                               "batch_size: 3}}"), 19,
     "studies[1].variants[0].set.batch_size", ["duplicate key 'batch_size'"], None),
]


@pytest.mark.parametrize("text,line,key,needles,profile",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_file(tmp_path, text, line, key, needles, profile):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(StudyFileError) as caught:
        load_study_file(path, profile)
    err, message = caught.value, str(caught.value)
    assert isinstance(err, InputError) and err.exit_code == 2
    assert str(path) in message and err.file == str(path)
    assert f"{path}:{line}:" in message, message
    assert err.line == line, message
    if key is not None:
        assert key in message and key in (err.key or ""), message
    for needle in needles:
        assert needle in message, message


def test_enough_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25


def test_base_is_valid(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(BASE)
    plan = load_study_file(path)
    assert plan.profile == "smoke" and [s.name for s in plan.studies] == ["s1", "s2"]
    path.write_text(search_case("lr: {type: loguniform, low: 0.001, high: 0.1}"))
    assert load_study_file(path).studies[0].kind == "search"


def test_missing_file(tmp_path):
    with pytest.raises(StudyFileError, match="not found"):
        load_study_file(tmp_path / "nope.yaml")
