"""``ablate data ...``: data-set tools. Mounted by the main CLI; imports stay light at the top
(the generator and numpy are imported inside the command)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Tuple

import typer

data_app = typer.Typer(help="Data set tools (synthetic Miniscapes generator).",
                       no_args_is_help=True)


@data_app.callback()
def _data() -> None:
    """Data set tools (synthetic Miniscapes generator)."""


def parse_size(text: str) -> Tuple[int, int]:
    """'HxW' -> (H, W), each side 8..MAX_IMAGE_SIDE (as synthetic_size in a config); raises
    typer.BadParameter (exit code 2) otherwise."""
    from runner.tasks.mtl.config import MAX_IMAGE_SIDE

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or not all(8 <= int(side) <= MAX_IMAGE_SIDE for side in m.groups()):
        raise typer.BadParameter(f"'{text}': expected HxW with both from 8 to {MAX_IMAGE_SIDE}, "
                                 f"e.g. 64x128 or 360x720")
    return int(m.group(1)), int(m.group(2))


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="directory to write <split>/{rgb,semseg,depth}"),
    train: int = typer.Option(300, "--train", min=0, help="number of train samples"),
    val: int = typer.Option(60, "--val", min=0, help="number of val samples"),
    test: int = typer.Option(0, "--test", min=0, help="number of test samples"),
    size: str = typer.Option("64x128", "--size", help="image size HxW"),
    seed: int = typer.Option(0, "--seed", help="generator seed"),
) -> None:
    """Render synthetic driving scenes in exactly the Miniscapes format."""
    hw = parse_size(size)
    from ablations.errors import InputError, writing
    from runner.tasks.mtl.data.synth import write_synthetic_dataset

    try:
        with writing("--out", out):  # --out is a file, read-only, ...: exit 2 naming it
            counts = write_synthetic_dataset(out, train, val, size=hw, seed=seed, n_test=test)
    except InputError as e:  # also a DataError (--out holds a data set already)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    for split, n in counts.items():
        typer.echo(f"wrote {n} {split} samples ({hw[0]}x{hw[1]}, seed {seed}) to {out / split}")
