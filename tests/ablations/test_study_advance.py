"""The study file's keys of issue 14: ``advance:`` (top level, profile, study: each key from the
nearest), ``baseline:`` and adaptive ``seeds: {min, max, step}``, with located errors."""
from __future__ import annotations

import pytest

from ablations import StudyFileError, load_study_file
from ablations.advance import AdvanceRule
from ablations.seeds import AdaptiveSeeds

BASE = """\
name: exp
task: tests.support.fake_task
advance: {when: significant}
profiles:
  quick:
    advance: {alpha: 0.01}
    studies:
      b:
        seeds: {min: 2, max: 6}
studies:
  - name: a
    start_from: none
    grid: {lr: [0.01, 0.02]}
  - name: b
    start_from: previous
    advance: {min_effect: 0.5}
    baseline: keep
    seeds: 3
    variants:
      - {name: keep, set: {}}
      - {name: wide, set: {weight: 2.0}}
"""
# 1 name  2 task  3 advance  4 profiles  5 quick  6 advance  7 studies  8 b  9 seeds  10 studies
# 11 - a  12 start_from  13 grid  14 - b  15 start_from  16 advance  17 baseline  18 seeds
# 19 variants  20 - keep  21 - wide


def _load(tmp_path, text: str, profile=None):
    path = tmp_path / "studies.yaml"
    path.write_text(text)
    return load_study_file(path, profile)


def test_advance_keys_come_from_the_nearest_level(tmp_path):
    plain = {s.name: s for s in _load(tmp_path, BASE).studies}
    assert plain["a"].advance == AdvanceRule("significant", 0.05, 0.0)
    assert plain["b"].advance == AdvanceRule("significant", 0.05, 0.5)
    assert plain["b"].baseline == "keep" and plain["b"].seeds == [0, 1, 2]
    assert plain["b"].adaptive is None
    quick = {s.name: s for s in _load(tmp_path, BASE, "quick").studies}
    assert quick["a"].advance == AdvanceRule("significant", 0.01, 0.0)
    assert quick["b"].advance == AdvanceRule("significant", 0.01, 0.5)
    assert quick["b"].adaptive == AdaptiveSeeds(2, 6, 2) and quick["b"].seeds == [0, 1]
    default = _load(tmp_path, BASE.replace("advance: {when: significant}\n", "", 1))
    assert default.studies[0].advance == AdvanceRule()              # today's rule: best mean


def _error(tmp_path, text: str, profile=None) -> str:
    with pytest.raises(StudyFileError) as exc:
        _load(tmp_path, text, profile)
    return str(exc.value)


@pytest.mark.parametrize("old,new,where,message", [
    ("advance: {when: significant}", "advance: {when: sometimes}", ":3: advance.when:",
     "when must be one of best_mean, significant (got 'sometimes')"),
    ("advance: {when: significant}", "advance: significant", ":3: advance:",
     "advance must be a mapping {when: best_mean|significant, alpha, min_effect}, not str"),
    ("advance: {alpha: 0.01}", "advance: {alpha: 1.5}", ":6: profiles.quick.advance.alpha:",
     "alpha must be between 0 and 1"),
    ("advance: {min_effect: 0.5}", "advance: {min_effect: -1}", ":16: studies[1].advance.min_effect:",
     "min_effect must be >= 0"),
    ("advance: {min_effect: 0.5}", "advance: {min_efect: 1}", ":16: studies[1].advance.min_efect:",
     "did you mean 'min_effect'?"),
    ("baseline: keep", "baseline: kept", ":17: studies[1].baseline:",
     "baseline names no variant of study 'b' (the variants this profile runs: keep, wide) "
     "(did you mean 'keep'?)"),
    ("seeds: 3", "seeds: {min: 4, max: 3}", ":18: studies[1].seeds.max:", "max (3) must be >= min (4)"),
    ("seeds: 3", "seeds: {min: 2}", ":18: studies[1].seeds:", "adaptive seeds need 'max'"),
    ("seeds: 3", "seeds: {min: 2, max: 4, stpe: 1}", ":18: studies[1].seeds.stpe:",
     "unknown key 'stpe' in adaptive seeds"),
    ("seeds: {min: 2, max: 6}", "seeds: {min: 0, max: 6}", ":9: profiles.quick.studies.b.seeds.min:",
     "min must be an integer from 1 to 1000 (got 0)"),
])
def test_mistakes_are_located(tmp_path, old, new, where, message):
    text = BASE.replace(old, new, 1)
    assert text != BASE
    error = _error(tmp_path, text)
    assert where in error and message in error


def test_baseline_must_survive_a_profile_trim_and_a_search_takes_no_adaptive_seeds(tmp_path):
    trimmed = BASE.replace("        seeds: {min: 2, max: 6}", "        only: [wide]")
    assert ":17: studies[1].baseline: baseline names no variant of study 'b' (the variants this " \
           "profile runs: wide)" in _error(tmp_path, trimmed, "quick")
    search = BASE.replace("    grid: {lr: [0.01, 0.02]}", "    seeds: {min: 2, max: 4}\n    search:\n"
                          "      n_trials: 2\n      space: {lr: {type: uniform, low: 0.01, high: 0.1}}")
    assert ":13: studies[0].seeds: study 'a' is a search study: each Optuna trial trains one seed, " \
           "so it takes a single seed (got adaptive seeds)" in _error(tmp_path, search)
