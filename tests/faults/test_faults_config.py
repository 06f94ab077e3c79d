"""Issue 11, config faults: values a config must refuse before anything runs, and errors that
can only be found once a winner is known.

* Non-finite numbers (``lr: .inf``, ``augment_scale: [0.5, .nan]``) were accepted, stored as JSON
  ``null`` and broke every later ``ablate run`` with a pydantic traceback. Every float key (tuple
  elements and search bounds too) refuses them: study file (cases in
  tests/ablations/test_study_file_errors.py, run through ``ablate run`` by
  test_faults_study_files.py), ``ablate train``'s config file and its ``--set``.
* Sizes that end in a MemoryError (``synthetic_size: [60000, 60000]``) are refused with the same
  located message; so are studies of more than 10,000 trials (cases in the same table).
* A variant that is valid on the profile base but not on the winner it starts from (the fake
  task's winner has weight 0, the variant sets momentum 0: the task's Config refuses both at 0)
  stopped ``ablate run`` with exit 2 and a message naming no file or line: it now names the file,
  the line and key of the variant's value.
* ``set: {<<: *base, lr: 0.2}`` (YAML's merge key, overriding lr) was refused as a duplicate key.
"""
from __future__ import annotations

import textwrap

import pytest

from tests.faults.fault_helpers import runs_by_variant
from tests.support.cli import invoke_cli


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
    message = _one_line(*invoke_cli("train", config, "--workspace", ws, capsys=capsys))
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
    message = _one_line(*invoke_cli("train", config, "--workspace", ws, "--set", item, capsys=capsys))
    assert message.startswith(f"ablate: --set {item}: "), message
    assert needle in message, message
    assert not ws.exists()


WINNER_CHAIN = """\
    name: winner-error
    task: tests.support.fake_task
    defaults: {epochs: 1, steps_per_epoch: 2}
    studies:
      - name: w
        variants:
          - {name: noweight, set: {weight: 0, lr: 0.05}}
          - {name: plain, set: {lr: 0.01}}
      - name: x
        variants:
          - {name: ok, set: {lr: 0.02}}
          - name: nomomentum
            set:
              momentum: 0
    """


def test_an_error_known_only_on_the_winner_names_file_line_and_key(tmp_path, capsys):
    """The fake task's score grows with lr: 'noweight' (weight 0) wins study w; variant
    'nomomentum' of x then has momentum and weight 0, which the task's Config refuses. The run
    stops with exit 2 at the variant's line and key, and what w trained stays done."""
    study = tmp_path / "chain.yaml"
    study.write_text(textwrap.dedent(WINNER_CHAIN))
    ws = tmp_path / "ws"
    message = _one_line(*invoke_cli("run", study, "--workspace", ws, "--no-progress", capsys=capsys))
    assert message.startswith(f"ablate: {study}:14: studies[1].variants[1].set.momentum: "
                              "study 'x', variant 'nomomentum': invalid config on the winner of 'w': "
                              "momentum + weight must be > 0"), message
    runs = runs_by_variant(ws)
    assert {k: r.status for k, r in runs.items() if k[0] == "w"} == {("w", "noweight", 0): "done",
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
    code, out, err = invoke_cli("inspect", study, "--workspace", tmp_path / "ws", "--no-params", capsys=capsys)
    assert code == 0, out + err
    assert 'faster seed=0 hash=' in out and '{"lr": 0.2, "momentum": 0.5}' in out, out
