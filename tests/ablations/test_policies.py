"""The study file's ``checkpoints:`` and ``identity:`` keys (issue 12): their defaults, their
located errors, and what ``identity: {code: strict}`` does to a trial's identity."""
import dataclasses
import textwrap

import pytest

from ablations import StudyFileError, expand_study, load_study_file, profile_base
from ablations.policies import Policies

STUDY = """\
name: demo
task: tests.support.fake_task
{keys}
studies:
  - name: lr
    grid: {{lr: [0.01, 0.02]}}
"""


def study(tmp_path, keys: str = ""):
    path = tmp_path / "studies.yaml"
    path.write_text(STUDY.format(keys=textwrap.dedent(keys).strip()))
    return path


def test_the_defaults_keep_final_weights_and_record_the_code(tmp_path):
    assert load_study_file(study(tmp_path)).policies == Policies(keep="final", code="record")


@pytest.mark.parametrize("keys, expected", [
    ("checkpoints: {keep: all}", Policies(keep="all")),
    ("checkpoints: {keep: none}\nidentity: {code: strict}", Policies(keep="none", code="strict")),
    ("identity: {}", Policies()),
])
def test_the_keys_set_the_plans_policies(tmp_path, keys, expected):
    assert load_study_file(study(tmp_path, keys)).policies == expected


@pytest.mark.parametrize("keys, where, needles", [
    ("checkpoints: {keep: finall}", "checkpoints.keep", ["must be one of final, all, none", "'finall'",
                                                         "did you mean 'final'"]),
    ("checkpoints: {kep: final}", "checkpoints.kep", ["unknown key 'kep' (expected: keep)", "did you mean 'keep'"]),
    ("checkpoints: final", "checkpoints", ["expected a mapping {keep: final|all|none}"]),
    ("identity: {code: strickt}", "identity.code", ["must be one of record, strict", "did you mean 'strict'"]),
    ("identity: [strict]", "identity", ["expected a mapping {code: record|strict}"]),
    ("identiti: {code: strict}", "identiti", ["unknown key 'identiti'", "did you mean 'identity'"]),
])
def test_a_bad_key_is_named_at_its_line(tmp_path, keys, where, needles):
    path = study(tmp_path, keys)
    with pytest.raises(StudyFileError) as raised:
        load_study_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:3: {where}: "), message
    for needle in needles:
        assert needle in message, message


def _hashes(plan, code_version=None):
    spec = dataclasses.replace(plan.study("lr"), code_version=code_version)
    return [t.config_hash for t in expand_study(spec, profile_base(plan))]


def test_strict_identity_takes_the_code_version_and_the_data_fingerprint(tmp_path, monkeypatch):
    plan = load_study_file(study(tmp_path, "identity: {code: strict}"))
    record = _hashes(plan)
    assert plan.study("lr").code_version is None  # the runner sets it: it knows the code
    assert _hashes(plan, None) == record
    first, again = _hashes(plan, "git 1a2b ablate 0.1.0"), _hashes(plan, "git 1a2b ablate 0.1.0")
    assert first == again and set(first).isdisjoint(record)
    assert set(_hashes(plan, "git 9f8e dirty 77 ablate 0.1.0")).isdisjoint(first)
    # the task's data fingerprint is part of a strict identity (and of no other)
    task = dataclasses.replace(plan.task, data_fingerprint=lambda config: f"data-{config.lr}")
    plan = dataclasses.replace(plan, studies=[dataclasses.replace(s, task=task) for s in plan.studies])
    assert _hashes(plan) == record
    with_data = _hashes(plan, "git 1a2b ablate 0.1.0")
    assert set(with_data).isdisjoint(first)
