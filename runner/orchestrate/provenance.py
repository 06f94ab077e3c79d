"""Which code and which data trained a run: recorded with it, compared with today's.

Why: a trial's identity is its config, so after a change of the training code ``ablate run``
trains nothing and the old results read as current. Each run therefore records its code version
and its data fingerprint when it finishes; ``status`` and the report flag a result whose record
differs from the code and data of today (``identity: {code: record}``), or the runner makes them
part of the identity so that such trials are trained again (``strict``, :func:`strict_plan`).

The code version is that of the task's module (for the built-in ``mtl``: the ablate project):

* in a git repository: ``HEAD`` plus a hash of ``git diff HEAD`` over its Python sources
  (uncommitted changes), and the hash of those sources as they are on disk: every tracked ``.py``
  file outside ``tests/`` directories and ``test_*.py`` files, plus the task's module file when
  it is not added yet. Results are compared on that hash: a commit that changes no Python source
  (the README, a study file, a test) or that commits the very changes a result was trained with
  leaves every result current, while the label says which commit trained it;
* else: a hash of the module's source (of every ``.py`` file below a package's directory);
* and ablate's version.

It is computed once per process (the worker's, status's): a few ``git`` calls. The data
fingerprint is the task's optional ``data_fingerprint(config)`` hook.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

_GIT_TIMEOUT_S = 60
#: The Python sources of a git project that count as its code (git pathspecs): tests and the
#: study file (YAML) never change what a trial computes.
SOURCES = ("*.py", ":(exclude,glob)**/tests/**", ":(exclude,glob)**/test_*.py")


@dataclass(frozen=True)
class CodeVersion:
    """``commit`` (git HEAD) or ``source`` (a hash of the module's source, outside git); ``dirty``
    (a hash of the uncommitted changes, None when clean); ``sources`` (in git: the hash of the
    Python sources on disk, what results are compared on; None outside git and in records made
    before it existed); ablate's version."""

    commit: Optional[str]
    source: Optional[str]
    dirty: Optional[str]
    ablate: str
    sources: Optional[str] = None

    def encode(self) -> str:
        """As stored in ``runs.code_version``."""
        parts = [f"git {self.commit}" if self.commit else f"file {self.source}"]
        if self.sources:
            parts.append(f"py {self.sources}")
        if self.dirty:
            parts.append(f"dirty {self.dirty}")
        return " ".join(parts + [f"ablate {self.ablate}"])

    def identity(self) -> str:
        """What strict identities hash: the sources and ablate's version where the sources' hash
        is known (a commit that changes no Python source keeps every identity), else
        :meth:`encode`."""
        return f"py {self.sources} ablate {self.ablate}" if self.sources else self.encode()

    @classmethod
    def decode(cls, text: Optional[str]) -> Optional["CodeVersion"]:
        """An :meth:`encode` or :meth:`identity` text (None: neither)."""
        words = (text or "").split()
        fields = dict(zip(words[::2], words[1::2])) if len(words) % 2 == 0 else {}
        if "ablate" not in fields or ("git" in fields and "file" in fields) \
                or not ("git" in fields or "file" in fields or "py" in fields):
            return None
        return cls(fields.get("git"), fields.get("file"), fields.get("dirty"), fields["ablate"], fields.get("py"))

    def differs(self, other: "CodeVersion") -> bool:
        """Whether ``other`` is other code (ablate's version aside): by the sources' hash when
        both have one, else by commit, source hash and uncommitted changes."""
        if self.sources and other.sources:
            return self.sources != other.sources
        return (self.commit, self.source, self.dirty) != (other.commit, other.source, other.dirty)

    def label(self, long: bool = False) -> str:
        """``1a2b3c4``, ``1a2b3c4+dirty`` (``long``: with the changes' hash), ``file 5f3a2b1c``,
        ``sources 5f3a2b1c`` (a strict identity)."""
        if self.commit:
            text = self.commit[:7]
        else:
            text = f"file {self.source[:8]}" if self.source else f"sources {self.sources[:8]}"
        if self.dirty:
            text += f"+dirty.{self.dirty[:7]}" if long else "+dirty"
        return text


def code_version(task: Any) -> CodeVersion:
    """The code version of ``task`` now (see the module docstring); cached per process."""
    return _code_version(str(task_module_file(task)))


def task_module_file(task: Any) -> Path:
    """The source file of the module the study file's ``task:`` names (a built-in name: its entry
    point's module), imported already by :func:`ablations.task.load_task`."""
    from ablations.task import builtin_tasks

    name = builtin_tasks().get(task.name, task.name).partition(":")[0]
    path = getattr(sys.modules.get(name), "__file__", None)
    if path is None:
        raise ValueError(f"task '{task.name}': cannot find the source file of module '{name}'")
    return Path(path).resolve()


@lru_cache(maxsize=None)
def _code_version(module_file: str) -> CodeVersion:
    ablate = _ablate_version()
    path = Path(module_file)
    root = _git(path.parent, "rev-parse", "--show-toplevel")
    head = _git(path.parent, "rev-parse", "--verify", "HEAD") if root else None
    if root is None or head is None:  # not in a repository, git missing, or no commit yet
        return CodeVersion(None, _source_hash(path), None, ablate)
    root_path = Path(root.decode().strip())
    changes = hashlib.sha256()
    diff = _git(root_path, "diff", "HEAD", "--no-ext-diff", "--no-color", "--binary", "--", *SOURCES)
    dirty = bool(diff)
    changes.update(diff or b"")
    files = sorted(set((_git(root_path, "ls-files", "-z", "--", *SOURCES) or b"").decode().split("\0")) - {""})
    if _git(root_path, "ls-files", "--others", "--exclude-standard", "--", str(path)):
        changes.update(path.read_bytes())  # the task's own file, not added yet
        dirty = True
        files.append(path.relative_to(root_path).as_posix())
    sources = hashlib.sha256()
    for name in files:
        try:
            content = (root_path / name).read_bytes()
        except OSError:  # deleted, not committed yet: the diff holds it
            content = b"\0deleted"
        sources.update(name.encode() + b"\0" + content + b"\0")
    return CodeVersion(head.decode().strip(), None, changes.hexdigest()[:12] if dirty else None, ablate,
                       sources.hexdigest()[:16])


def _git(cwd: Path, *args: str) -> Optional[bytes]:
    """``git args`` in ``cwd``: its output, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _source_hash(path: Path) -> str:
    """sha256 of the module's source; for a package (``__init__.py``), of every ``.py`` below it."""
    files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path.parent).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _ablate_version() -> str:
    try:
        return importlib.metadata.version("ablate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def data_fingerprint(task: Any, config: Any) -> Optional[str]:
    """The task's fingerprint of the data ``config`` reads (None: the task has no hook, or it
    failed: a provenance record, never a reason to fail a trial or a view)."""
    if task.data_fingerprint is None:
        return None
    try:
        value = task.data_fingerprint(config)
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("task '%s': data_fingerprint failed: %s", task.name, exc)
        return None
    return None if value is None else str(value)


def provenance_columns(task: Any, config: Any) -> dict:
    """``code_version`` and ``data_fingerprint`` of a run trained now, as columns of its row
    (a version that cannot be told is None, logged: the trial's result stands)."""
    try:
        code: Optional[str] = code_version(task).encode()
    except (OSError, ValueError) as exc:
        log.warning("task '%s': code version not recorded: %s", task.name, exc)
        code = None
    return {"code_version": code, "data_fingerprint": data_fingerprint(task, config)}


def strict_plan(plan: Any) -> Any:
    """``plan`` with today's code version in every study's identity when the file says
    ``identity: {code: strict}``; the plan as it is otherwise."""
    from dataclasses import replace

    if plan.policies.code != "strict":
        return plan
    code = code_version(plan.task).identity()
    return replace(plan, studies=[replace(spec, code_version=code) for spec in plan.studies])


def mismatch(recorded_code: Optional[str], recorded_data: Optional[str], current: CodeVersion,
             current_data: Optional[str]) -> Optional[str]:
    """Why a result's record differs from today's code or data, in words (None: it does not). A
    run finished before ablate recorded code versions says so; data is compared where both the
    record and today's fingerprint are known."""
    reasons = []
    old = CodeVersion.decode(recorded_code)
    if old is None:
        reasons.append("with no recorded code version (trained before ablate recorded it)")
    else:
        if old.differs(current):
            long = old.label() == current.label()
            reasons.append(f"trained at {old.label(long)}, now {current.label(long)}")
        if old.ablate != current.ablate:
            reasons.append(f"trained with ablate {old.ablate}, now {current.ablate}")
    if recorded_data is not None and current_data is not None and recorded_data != current_data:
        reasons.append(f"trained on data {recorded_data[:12]}, now {current_data[:12]}")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class Stale:
    """A result trained by other code or data than today's (see :func:`stale_results`)."""

    study: str
    variant: str
    seed: int
    run_hash: str
    reason: str


def stale_results(session: Any, states: list) -> list[Stale]:
    """Every done result of ``states`` whose recorded code version or data fingerprint differs
    from today's, in chain order. Reads the runs once; today's data fingerprint once per config."""
    cells = [(s.name, c) for s in states for c in s.cells if c.status == "done" and c.run_hash]
    if not cells:
        return []
    runs = session.store.runs([c.run_hash for _, c in cells])
    current = code_version(session.task)
    data: dict[str, Optional[str]] = {}
    found = []
    for study, cell in cells:
        run = runs.get(cell.run_hash)
        if run is None:
            continue
        if run.hash not in data:
            data[run.hash] = _data_now(session.task, run.config) if run.data_fingerprint else None
        reason = mismatch(run.code_version, run.data_fingerprint, current, data[run.hash])
        if reason is not None:
            found.append(Stale(study, cell.variant, cell.seed, run.hash, reason))
    return found


def _data_now(task: Any, config: dict) -> Optional[str]:
    try:
        parsed = task.Config.model_validate(config)
    except Exception:  # noqa: BLE001 - a stored config the task no longer takes: nothing to compare
        return None
    return data_fingerprint(task, parsed)
