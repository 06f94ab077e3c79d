"""Results know their code (issue 12): each run records the code version and data fingerprint
that trained it; after a change, ``identity: {code: record}`` flags the old results in status and
the report (still results, not retrained), ``strict`` trains them again under a new identity, and
neither loses the old result.

Every ``ablate`` here is a subprocess: a code version is computed once per process, as in real use.
The task is the shared fake task, re-exported by a module beside the study file that a test edits
as a user edits their training code (outside git: its source hash; in a git repository: the
commit plus a hash of the uncommitted changes)."""
from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import run_cli

TASK = '''\
from pathlib import Path

from tests.support.fake_task import *  # noqa: F401,F403 - a user's task around the shared fake one

SCALE = 1


def data_fingerprint(config):
    return (Path(__file__).parent / "data.txt").read_text().strip()
'''

STUDY = """\
name: demo
task: my_task
{keys}
studies:
  - name: lr
    grid: {{lr: [0.01, 0.02]}}
"""


def setup(directory: Path, keys: str = "") -> Path:
    (directory / "my_task.py").write_text(TASK)
    (directory / "data.txt").write_text("data-v1\n")
    path = directory / "studies.yaml"
    path.write_text(STUDY.format(keys=keys))
    return path


def edit_task(directory: Path) -> None:
    """Change one line of the task's code."""
    path = directory / "my_task.py"
    path.write_text(path.read_text().replace("SCALE = 1", "SCALE = 2"))


def ablate(directory: Path, *args) -> subprocess.CompletedProcess:
    done = run_cli(*args, cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def runs(directory: Path) -> dict[str, dict]:
    db = sqlite3.connect(f"file:{directory / 'ablate-runs' / 'ablate.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute("SELECT * FROM runs").fetchall()
        metrics = db.execute("SELECT run_hash, name, value FROM run_metrics").fetchall()
    finally:
        db.close()
    out = {r["hash"]: dict(r, metrics={}) for r in rows}
    for m in metrics:
        out[m["run_hash"]]["metrics"][m["name"]] = m["value"]
    return out


def counts(out: str) -> dict[str, int]:
    """The study ``lr``'s row of the status table: trials per status."""
    header = next(line for line in out.splitlines() if "study" in line and "done" in line)
    row = next(line for line in out.splitlines() if line.startswith("│ lr "))
    names = [c.strip() for c in re.split(r"[┃│]", header)[1:-1]]
    cells = [c.strip() for c in row.split("│")[1:-1]]
    return {n: int(c) for n, c in zip(names, cells) if n in ("done", "pending")}


def stale_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("stale ")]


def test_record_flags_results_of_changed_code_and_data_in_status_and_report(tmp_path):
    study = setup(tmp_path)
    ablate(tmp_path, "run", study, "--no-progress")
    before = runs(tmp_path)
    assert [r["status"] for r in before.values()] == ["done", "done"]
    (version,) = {r["code_version"] for r in before.values()}
    assert re.fullmatch(r"file [0-9a-f]{16} ablate \S+", version), version  # outside git: the source's hash
    assert {r["data_fingerprint"] for r in before.values()} == {"data-v1"}
    assert stale_lines(ablate(tmp_path, "status", study).stdout) == []

    edit_task(tmp_path)
    (tmp_path / "data.txt").write_text("data-v2\n")
    out = ablate(tmp_path, "status", study).stdout
    (line,) = stale_lines(out)
    old = version.split()[1][:8]
    assert re.fullmatch(rf"stale 2 results trained at file {old}, now file (?!{old})[0-9a-f]{{8}}; trained on "
                        r"data data-v1, now data-v2: lr / lr=0\.01 / seed 0, lr / lr=0\.02 / seed 0", line), out
    assert "'identity: {code: strict}'" in out

    ablate(tmp_path, "report", study, "--no-log")
    report = (tmp_path / "ablate-runs" / "report" / "report.md").read_text()
    section = report.split("### Results trained by other code or data", 1)[1]
    for run_hash in before:
        assert re.search(rf"\| `{run_hash}` \| trained at file {old}, now file [0-9a-f]{{8}}; trained on data", section)

    ablate(tmp_path, "run", study, "--no-progress")  # a flag never retrains
    assert runs(tmp_path) == before


def test_strict_retrains_changed_code_under_a_new_identity_and_keeps_the_old_result(tmp_path):
    study = setup(tmp_path, "identity: {code: strict}")
    ablate(tmp_path, "run", study, "--no-progress")
    old = runs(tmp_path)
    assert len(old) == 2 and all(r["status"] == "done" for r in old.values())
    assert counts(ablate(tmp_path, "status", study).stdout) == {"done": 2, "pending": 0}  # same code

    edit_task(tmp_path)
    out = ablate(tmp_path, "status", study).stdout
    assert counts(out) == {"done": 0, "pending": 2}, out  # the new identities
    assert "identity: strict: trials are identified with code file" in out

    ablate(tmp_path, "run", study, "--no-progress")
    after = runs(tmp_path)
    new = {h: r for h, r in after.items() if h not in old}
    assert len(new) == 2 and all(r["status"] == "done" for r in new.values())
    assert {r["code_version"] for r in new.values()}.isdisjoint({r["code_version"] for r in old.values()})
    assert {h: after[h] for h in old} == old  # the old results, untouched
    for run_hash in old:
        assert (tmp_path / "ablate-runs" / "runs" / run_hash / "config.yaml").is_file()
    assert stale_lines(ablate(tmp_path, "status", study).stdout) == []


def git_project(directory: Path):
    """``directory`` as a git repository with everything in it committed; returns ``git(*args)``."""

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=directory,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (directory / ".gitignore").write_text("ablate-runs/\n__pycache__/\n")
    git("add", ".")
    git("commit", "-q", "-m", "task")
    return git


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_in_git_the_version_is_the_commit_plus_the_uncommitted_changes_but_not_the_study_files(tmp_path):
    study = setup(tmp_path)
    git = git_project(tmp_path)
    head = git("rev-parse", "HEAD")
    ablate(tmp_path, "run", study, "--no-progress")
    assert {r["code_version"].split()[:2][1] for r in runs(tmp_path).values()} == {head}

    study.write_text(study.read_text() + "# an edit of the study file is no code change\n")
    assert stale_lines(ablate(tmp_path, "status", study).stdout) == []

    edit_task(tmp_path)
    (line,) = stale_lines(ablate(tmp_path, "status", study).stdout)
    assert line.startswith(f"stale 2 results trained at {head[:7]}, now {head[:7]}+dirty: lr / lr=0.01"), line


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("identity", ["record", "strict"])
def test_in_git_results_are_compared_on_python_sources_not_on_commits(tmp_path, identity):
    """A commit of the README or a test, or of the very change a result was trained with, leaves
    results current (and strict identities as they were); a change of Python source does not."""
    study = setup(tmp_path, f"identity: {{code: {identity}}}")
    git = git_project(tmp_path)
    first = git("rev-parse", "HEAD")
    ablate(tmp_path, "run", study, "--no-progress")
    trained = runs(tmp_path)
    assert re.fullmatch(rf"git {first} py [0-9a-f]{{16}} ablate \S+", next(iter(trained.values()))["code_version"])

    def current() -> bool:
        out = ablate(tmp_path, "status", study).stdout
        return stale_lines(out) == [] and counts(out) == {"done": 2, "pending": 0}

    (tmp_path / "README.md").write_text("# notes\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "check_task.py").write_text("assert True\n")
    (tmp_path / "test_task.py").write_text("def test_nothing():\n    pass\n")
    git("add", ".")
    git("commit", "-q", "-m", "docs and tests")
    assert current()

    edit_task(tmp_path)
    assert not current()
    git("commit", "-q", "-am", "the edit")
    edited = git("rev-parse", "HEAD")
    out = ablate(tmp_path, "status", study).stdout
    if identity == "record":
        (line,) = stale_lines(out)
        assert line.startswith(f"stale 2 results trained at {first[:7]}, now {edited[:7]}: lr / lr=0.01"), line
    else:
        assert counts(out) == {"done": 0, "pending": 2}, out

    path = tmp_path / "my_task.py"  # the edit undone in a third commit: the sources results were trained with
    path.write_text(path.read_text().replace("SCALE = 2", "SCALE = 1"))
    git("commit", "-q", "-am", "undo")
    assert current()
    assert runs(tmp_path) == trained
