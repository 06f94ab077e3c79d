"""Issue 11, config faults: values a config must refuse before anything runs, and errors that
can only be found once a winner is known.

* Non-finite numbers (``lr: .inf``, ``augment_scale: [0.5, .nan]``) were accepted, stored as JSON
  ``null`` and broke every later ``ablate run`` with a pydantic traceback. Every float key (tuple
  elements and search bounds too) refuses them: study file (cases in
  tests/ablations/test_study_file_errors.py, run through ``ablate run`` by
  test_faults_study_files.py), ``ablate train``'s config file and its ``--set``.
* Sizes that end in a MemoryError (``synthetic_size: [60000, 60000]``) are refused with the same
  located message; so are studies of more than 10,000 trials (cases in the same table).
* A variant that is valid on the profile base but not on the winner it starts from (the winner
  has seg weight 0, the variant sets depth weight 0) stopped ``ablate run`` with exit 2 and a
  message naming no file or line: it now names the file, the line and key of the variant's value.
* ``set: {<<: *base, lr: 0.2}`` (YAML's merge key, overriding lr) was refused as a duplicate key.
"""
from __future__ import annotations

import functools
import textwrap

import pytest

import runner.orchestrate.scheduler
from fault_fakes import FakeTrainer
from fault_helpers import main_inprocess, runs_by_variant
from runner.orchestrate.worker import WorkerOptions


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err, out + err
    message = err.strip()
    assert message.startswith("ablate: ") and len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("text, line, key, needle", [
    ("lr: .inf\n", 2, "lr", "finite number (got inf)"),
    ("augment_scale: [0.5, .nan]\n", 2, "augment_scale[1]", "finite number (got nan)"),
    ("synthetic_size: [60000, 60000]\n", 2, "synthetic_size[0]", "less than or equal to 2048 (got 60000)"),
    ("crop_size: [4096, 256]\n", 2, "crop_size[0]", "less than or equal to 2048 (got 4096)"),
], ids=["inf", "nan-in-tuple", "huge-synthetic-size", "huge-crop"])
def test_train_config_file_refuses_non_finite_and_huge_values(tmp_path, capsys, text, line, key, needle):
    config = tmp_path / "cfg.yaml"
    config.write_text("encoder: resnet18\n" + text)
    ws = tmp_path / "ws"
    message = _one_line(*main_inprocess(["train", config, "--workspace", ws], capsys))
    assert message.startswith(f"ablate: {config}:{line}: {key}: "), message
    assert needle in message, message
    assert not ws.exists()  # refused before the workspace is made


@pytest.mark.parametrize("item, needle", [
    ("lr=.nan", "finite number"), ("lr=-.inf", "finite number"),
    ("augment_scale=[1.0, .inf]", "finite number"), ("synthetic_size=[60000, 64]", "2048"),
])
def test_train_set_refuses_non_finite_and_huge_values_naming_the_option(tmp_path, capsys, item, needle):
    config = tmp_path / "cfg.yaml"
    config.write_text("encoder: resnet18\n")
    ws = tmp_path / "ws"
    message = _one_line(*main_inprocess(["train", config, "--workspace", ws, "--set", item], capsys))
    assert message.startswith(f"ablate: --set {item}: "), message
    assert needle in message, message
    assert not ws.exists()


WINNER_CHAIN = """\
    name: winner-error
    defaults: {device: cpu, encoder: resnet18, crop_size: [64, 128], epochs: 1, steps_per_epoch: 2,
               batch_size: 2}
    studies:
      - name: w
        variants:
          - {name: noseg, set: {loss_weight_seg: 0, lr: 0.05}}
          - {name: plain, set: {lr: 0.01}}
      - name: x
        variants:
          - {name: ok, set: {lr: 0.02}}
          - name: nodepth
            set:
              loss_weight_depth: 0
    """


def test_an_error_known_only_on_the_winner_names_file_line_and_key(tmp_path, capsys, monkeypatch,
                                                                   restore_signals):
    """The fake trainer's grader grows with lr: 'noseg' (seg weight 0) wins study w; variant
    'nodepth' of x then has both weights 0. The run stops with exit 2 at the variant's line and
    key, and what w trained stays done."""
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    trainer = FakeTrainer(str(log_dir), step_s=0.001)
    monkeypatch.setattr(runner.orchestrate.scheduler, "WorkerOptions", functools.partial(WorkerOptions, trainer=trainer))
    study = tmp_path / "chain.yaml"
    study.write_text(textwrap.dedent(WINNER_CHAIN))
    ws = tmp_path / "ws"
    message = _one_line(*main_inprocess(["run", study, "--workspace", ws, "--no-progress"], capsys))
    assert message.startswith(f"ablate: {study}:14: studies[1].variants[1].set.loss_weight_depth: "
                              "study 'x', variant 'nodepth': invalid config on the winner of 'w': "
                              "loss_weight_seg + loss_weight_depth must be > 0"), message
    runs = runs_by_variant(ws)
    assert {k: r["status"] for k, r in runs.items() if k[0] == "w"} == {("w", "noseg", 0): "done",
                                                                         ("w", "plain", 0): "done"}
    assert not [k for k in runs if k[0] == "x"]  # nothing of x was written or trained


def test_a_merge_key_overridden_by_an_explicit_key_is_no_duplicate(tmp_path, capsys):
    study = tmp_path / "merge.yaml"
    study.write_text(textwrap.dedent("""\
        name: merge
        defaults: {encoder: resnet18}
        studies:
          - name: s
            variants:
              - {name: slow, set: &slow {lr: 0.1, momentum: 0.5}}
              - {name: faster, set: {<<: *slow, lr: 0.2}}
        """))
    code, out, err = main_inprocess(["inspect", study, "--workspace", tmp_path / "ws", "--no-params"], capsys)
    assert code == 0, out + err
    assert 'faster seed=0 hash=' in out and '{"lr": 0.2, "momentum": 0.5}' in out, out
