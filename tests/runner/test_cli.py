"""The ``ablate`` command line: start-up cost, exit codes, inspect/status/results output."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUDIES_YAML = REPO / "studies.yaml"

_STARTUP = """
import sys, time
wall, cpu = time.perf_counter(), time.process_time()
from runner.cli import main
sys.argv = ["ablate", "--help"]
out, sys.stdout = sys.stdout, open("/dev/null", "w")
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout = out
heavy = [m for m in ("pydantic", "numpy", "torch", "mlflow", "optuna", "pandas", "sqlalchemy",
                     "ablations", "rich.markdown") if m in sys.modules]
print(time.perf_counter() - wall, time.process_time() - cpu, code, ",".join(heavy))
"""


def test_help_imports_nothing_heavy():
    """`ablate --help` stays instant because it imports none of torch, mlflow, optuna, pandas...
    (checked in a fresh interpreter; the time itself is printed, not asserted: timings belong to
    benchmarks, and a loaded CI machine would make a threshold flaky)."""
    out = subprocess.run([sys.executable, "-c", _STARTUP], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    wall, code, heavy = float(out[0]), out[2], out[3] if len(out) > 3 else ""
    assert code == "0"
    assert heavy == "", f"`import runner.cli` + --help loaded {heavy}"
    print(f"ablate --help: {wall:.2f}s")


def test_help_lists_every_command(kit, tmp_path):
    out = kit.run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("run", "status", "inspect", "results", "report", "ui", "train", "data"):
        assert command in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--study", "no_such_study"], "--study no_such_study"),
    (["--gpus", "a,b"], "--gpus"),
    (["--gpus", "-1"], "--gpus"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message, kit):
    """The real entry point (runner.cli.main): exit code 2, one line on stderr, no traceback."""
    out = kit.run_cli("run", STUDIES_YAML, "--workspace", tmp_path / "ws", "--no-progress", *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ws" / "runs").exists()  # nothing trained


@pytest.mark.parametrize("command, args, message", [
    ("status", ["--db", "notaurl"], "--db notaurl: not a database URL"),
    ("status", ["--db", "mysql+nosuchdriver://a/b"], "--db mysql+nosuchdriver://a/b: not a database URL"),
    ("status", ["--db", "postgresql+psycopg2://ann:secret@127.0.0.1:1/x"],
     "--db postgresql+psycopg2://ann:***@127.0.0.1:1/x: cannot open the database"),
    ("run", ["--tracking-uri", "http://127.0.0.1:1"],
     "--tracking-uri http://127.0.0.1:1: cannot reach the MLflow tracking store"),
    ("run", ["--profile", "search-demo", "--optuna-storage", "postgresql+psycopg2://ann:secret@127.0.0.1:1/o"],
     "--optuna-storage postgresql+psycopg2://ann:***@127.0.0.1:1/o: cannot open Optuna's storage"),
    ("report", ["--tracking-uri", "http://127.0.0.1:1"], "written, but not logged to the tracker: --tracking-uri"),
    # no driver suffix: SQLAlchemy's default PostgreSQL driver (psycopg 3) may not be installed
    ("status", ["--db", "postgresql://ann:secret@127.0.0.1:1/x"],
     "--db postgresql://ann:***@127.0.0.1:1/x: cannot open the database"),
    ("run", ["--tracking-uri", "postgresql://ann:secret@127.0.0.1:1/x"],
     "--tracking-uri postgresql://ann:***@127.0.0.1:1/x: cannot reach the MLflow tracking store"),
], ids=["db-not-a-url", "db-unknown-driver", "db-unreachable", "mlflow-unreachable", "optuna-unreachable",
        "report-mlflow-unreachable", "db-postgresql-default-driver", "mlflow-on-postgresql-unreachable"])
def test_unusable_store_urls_exit_2_naming_the_option(tmp_path, command, args, message, kit):
    """A store that is not a URL or cannot be reached: exit 2 with the option, the URL (password
    masked) and the reason; no traceback, no training. Port 1 refuses connections at once."""
    extra = ["--no-progress"] if command == "run" else []
    out = kit.run_cli(command, STUDIES_YAML, "--workspace", tmp_path / "ws", *extra, *args, cwd=tmp_path,
                      timeout=120, env=kit.cli_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"))
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "secret" not in out.stderr
    assert not (tmp_path / "ws" / "runs").exists()


def test_store_error_message():
    """One message for every unusable store URL: option, masked URL, first non-empty line of the
    reason (the type name when there is none: no IndexError), a missing driver said as such."""
    from runner.urls import store_error

    url = "postgresql://ann:secret@db.example:5432/x"
    empty = store_error("--db", url, RuntimeError("\n  \n"))
    assert str(empty) == "--db postgresql://ann:***@db.example:5432/x: cannot open the database: RuntimeError"
    lines = store_error("--optuna-storage", url, OSError("\nfirst for ann:secret\nsecond"), "cannot open Optuna's storage")
    assert str(lines) == ("--optuna-storage postgresql://ann:***@db.example:5432/x: cannot open Optuna's storage: "
                          "first for ann:***")
    missing = store_error("--tracking-uri", url, ModuleNotFoundError("No module named 'psycopg'"))
    assert "driver is not installed (No module named 'psycopg')" in str(missing) and "secret" not in str(missing)


def test_optuna_storage_that_is_the_result_store_exits_2(tmp_path, kit):
    """`--optuna-storage` naming the result store's database is refused before anything runs,
    by a single-worker run too (the check lives in Session.open, which `run` now reaches)."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    out = kit.run_cli("run", STUDIES_YAML, "--workspace", tmp_path / "ws", "--no-progress", "--workers", "1",
                      "--db", url, "--optuna-storage", url, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"--optuna-storage {url}: Optuna needs a database of its own" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "ws" / "runs").exists()


@pytest.mark.parametrize("argv", [
    ["run", STUDIES_YAML, "--no-progress", "--workspace", "{file}"],
    ["status", STUDIES_YAML, "--workspace", "{file}"],
    ["train", REPO / "examples" / "train-resnet18-64x128.yaml", "--workspace", "{file}"],
    ["data", "synth", "--out", "{file}", "--train", "1", "--val", "1"],
], ids=["run", "status", "train", "data-synth"])
def test_a_workspace_or_output_that_is_a_file_exits_2(tmp_path, argv, kit):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    out = kit.run_cli(*[str(a).replace("{file}", str(blocker)) for a in argv], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert str(blocker) in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert blocker.read_text() == "not a directory"  # left as it was


def test_bad_results_format_exits_2(tmp_path, kit):
    out = kit.run_cli("results", STUDIES_YAML, "--workspace", tmp_path / "ws", "--format", "xml", cwd=tmp_path)
    assert out.returncode == 2 and "--format" in out.stderr and "Traceback" not in out.stderr


def _expected_trials(profile: str) -> int:
    from ablations import load_study_file

    plan = load_study_file(STUDIES_YAML, profile)
    return sum(len(s.variants) * len(s.seeds) for s in plan.studies if s.kind != "search")


def test_inspect_no_params_lists_every_trial_without_training(tmp_path, cli, kit):
    ws = tmp_path / "ws"
    code, out, _ = cli("inspect", STUDIES_YAML, "--profile", "full", "--no-params", "--workspace", ws)
    assert code == 0
    lines = [line for line in out.splitlines() if " seed=" in line]
    assert len(lines) == _expected_trials("full") == 39
    assert "#params" not in out
    assert out.count("\n== ") == 13
    assert "pinned {'optimizer': 'adam', 'lr': 0.0001}" in out and "Adam 1e-4 chosen over SGD 0.03" in out
    # the diff is against the full base: the first variant of the first study differs by lr only
    assert lines[0].endswith('{"lr": 0.001}')
    assert not (ws / "runs").exists() and not (ws / "mlflow.db").exists()


def test_inspect_with_params_prints_the_reports_counts_and_caches_them(tmp_path, kit):
    """Builds every distinct ResNet-34 model once (on the meta device), then from the cache (kept
    in an existing workspace: inspect creates none)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    cache_file = ws / "cache" / "param_counts.json"
    cache_stats = []
    for _ in range(2):
        out = kit.run_cli("inspect", STUDIES_YAML, "--profile", "full", "--workspace", ws, cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        cache_stats.append((cache_file.stat().st_ino, cache_file.stat().st_mtime_ns))
        sections = {block.split(":", 1)[0]: block for block in out.stdout.split("\n== ")[1:]}
        # the report's Table 5 and 6: branched 32,142,356 and distillation 37,095,656 parameters
        assert "branched seed=0 hash=" in sections["branched"]
        assert "#params 32,142,356" in sections["branched"].split("branched seed=0", 1)[1].splitlines()[0]
        assert "#params 37,095,656" in sections["distillation"].split("distillation seed=0", 1)[1].splitlines()[0]
    counts = json.loads(cache_file.read_text())
    assert 32142356 in counts.values() and 37095656 in counts.values()
    # the second call built no model: every count came from the cache, which it did not rewrite
    # (a rewrite is an atomic rename, so it would change the inode)
    assert cache_stats[0] == cache_stats[1]


def test_status_results_on_a_fake_workspace(tmp_path, cli, kit):
    """status: counts, winners, failure reasons, the pin's reason, a study blocked behind a study
    whose every variant failed; results: csv/json/markdown parsed back."""
    import pandas as pd

    # weights/seg7 fails (seg5 still wins, though seg7 would score higher), last/a fails (no
    # winner): after_last is blocked
    text = kit.fake_study("tiny", """\
  - name: lr
    start_from: none
    grid: {lr: [0.001, 0.003, 0.002]}
  - name: weights
    start_from: previous
    pin: {set: {epochs: 2}, reason: "pinned for the status test"}
    variants:
      - {name: seg5, set: {weight: 0.5}}
      - {name: seg7, set: {weight: 0.7, fault: error}}
  - name: last
    start_from: previous
    variants:
      - {name: a, set: {momentum: 0.2, fault: error}}
  - name: after_last
    start_from: previous
    variants:
      - {name: b, set: {momentum: 0.3}}
""", epochs=1)
    study_file = kit.write_study_file(tmp_path, text)
    ws = tmp_path / "ws"
    session = kit.open_session(study_file, ws)
    summary = kit.run_fake(session)
    assert summary.failed == 2 and not summary.interrupted
    code, out, _ = cli("status", study_file, "--workspace", ws)
    flat = " ".join(out.split())
    assert code == 0
    for column in ("done", "running", "failed", "pruned", "interrupted", "pending", "winner"):
        assert column in out
    assert "│ lr │ 3 │ 0 │ 0 │ 0 │ 0 │ 0 │ lr=0.003 │" in flat
    assert "│ weights │ 1 │ 0 │ 1 │ 0 │ 0 │ 0 │ seg5 │" in flat
    assert "│ last │ 0 │ 0 │ 1 │ 0 │ 0 │ 0 │ no winner (all failed) │" in flat
    assert "waiting for last (blocked: last has no winner)" in flat
    assert "failed weights / seg7 / seed 0: RuntimeError: fake task exploded on purpose" in flat
    assert "pin weights: {\"epochs\": 2} over the winner of lr: pinned for the status test" in flat

    code, out, _ = cli("results", study_file, "--workspace", ws, "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert code == 0 and len(frame) == 6
    assert list(frame["status"]) == ["done"] * 4 + ["failed"] * 2
    assert frame.loc[frame["winner"], "variant"].tolist() == ["lr=0.003", "seg5"]
    assert frame.loc[frame["status"] == "failed", "error"].str.contains("fake task exploded on purpose").all()
    # 10 + 1000 lr + momentum - 1000 weight_decay + weight (the fake task's defaults otherwise)
    assert frame.loc[frame["variant"] == "lr=0.003", "score"].item() == pytest.approx(10 + 3 + 0.9 - 0.1 + 0.5)

    code, out, _ = cli("results", study_file, "--workspace", ws, "--format", "json")
    records = json.loads(out)
    assert code == 0 and len(records) == 6 and {r["study"] for r in records} == {"lr", "weights", "last"}
    assert pd.read_json(io.StringIO(out), orient="records")["score"].notna().sum() == 4

    code, out, _ = cli("results", study_file, "--workspace", ws, "--format", "markdown")
    assert code == 0 and out.splitlines()[0].startswith("|") and "lr=0.003" in out

    out_file = tmp_path / "results.csv"
    code, out, _ = cli("results", study_file, "--workspace", ws, "--format", "csv", "--output", out_file)
    assert code == 0 and len(pd.read_csv(out_file)) == 6
