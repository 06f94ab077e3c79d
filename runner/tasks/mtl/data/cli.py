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
    """'HxW' -> (H, W); raises typer.BadParameter (exit code 2) otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 8:
        raise typer.BadParameter(f"'{text}': expected HxW with both at least 8, e.g. 64x128 or "
                                 f"360x720")
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
    from runner.tasks.mtl.data.errors import DataError
    from runner.tasks.mtl.data.synth import write_synthetic_dataset

    try:
        counts = write_synthetic_dataset(out, train, val, size=hw, seed=seed, n_test=test)
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    except OSError as e:  # --out is a file, not writable, ...
        typer.echo(f"error: --out {out}: cannot write the data set there ({e.strerror}: {e.filename})", err=True)
        raise typer.Exit(2)
    for split, n in counts.items():
        typer.echo(f"wrote {n} {split} samples ({hw[0]}x{hw[1]}, seed {seed}) to {out / split}")
