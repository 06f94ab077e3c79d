"""``ablate train CONFIG.yaml``: one configuration, outside any study.

Useful on its own (debugging a config, benchmarking) and the same path the study runner takes:
resolve assets in the workspace, train in ``<workspace>/train/<config hash>/`` (so running it
again resumes or returns the finished result), print one line per epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from ablations.errors import InputError
from runner.tasks.mtl.config import Config as TrainConfig
from ablations.yaml_source import load_yaml, parse_yaml


def config_from_mapping(data: object, doc, given: Optional[dict] = None) -> TrainConfig:
    """Validate a mapping of TrainConfig keys; errors name the file, line and key, or the
    ``--set KEY=VALUE`` option for a key in ``given`` (key -> the option's text)."""
    from ablations.locate import suggest

    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping of TrainConfig keys")
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            message, hint = "unknown key", suggest(loc[0], TrainConfig.model_fields)
        else:
            message, hint = err["msg"] + (f" (got {err['input']!r})" if loc else ""), None
        if loc and given and loc[0] in given:
            raise InputError(f"--set {given[loc[0]]}: {message}"
                             + (f" (did you mean '{hint}'?)" if hint else "")) from None
        raise doc.error(loc, message, suggestion=hint) from None


def load_train_config(path: Path, overrides: list[str] = ()) -> TrainConfig:
    doc = load_yaml(path)
    if doc.data is not None and not isinstance(doc.data, dict):  # before --set writes into it
        raise doc.error((), f"expected a mapping of TrainConfig keys, not a {type(doc.data).__name__}")
    data = dict(doc.data or {})
    given = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        data[key.strip()] = parse_yaml(value, f"--set {key}").data
        given[key.strip()] = item
    return config_from_mapping(data, doc, given)


def train_config_file(path: Path, workspace: Path, overrides: list[str] = ()):
    config = load_train_config(Path(path), overrides)
    from runner.tasks.mtl.assets import prepare_splits
    from runner.tasks.mtl.pretrain import resolve_encoder_weights
    from runner.orchestrate.session import ensure_workspace
    from runner.tasks.mtl.train import TrainHooks, train

    workspace = ensure_workspace(Path(workspace))
    train_split, val_split = prepare_splits(config, workspace)
    resolved = resolve_encoder_weights(config, workspace)
    run_dir = workspace / "train" / config.identity_hash()

    def on_epoch(row: dict) -> None:
        print(f"epoch {row['epoch']:>3}  step {row['step']:>6}  loss {row['loss']:.4f}  "
              f"iou {row['iou']:.3f}  si_logrmse {row['si_logrmse']:.3f}  grader {row['grader']:.3f}  "
              f"{row['wall_time_s']:.1f}s", flush=True)

    return train(resolved, run_dir, train_split, val_split, hooks=TrainHooks(on_epoch=on_epoch))
