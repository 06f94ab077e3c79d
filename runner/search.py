"""Optuna-driven studies: Optuna samples and prunes, ablate claims, trains and records.

Each search cell (``search-000`` ...) is claimed atomically in the result store *before* Optuna
is asked for parameters, so n_trials cells give exactly n_trials Optuna trials even with many
workers (Optuna's own samplers, GridSampler included, can hand out the same point twice at the
tail). Optuna's storage (SQLite in the workspace, or PostgreSQL) keeps its study, so samplers see
every finished trial and optuna-dashboard shows them. The result store stays the record: a search
trial's run, metrics and checkpoint live there like any other's.
"""
from __future__ import annotations

from typing import Optional

from ablations import resolve_config
from ablations.search import make_pruner, make_sampler, search_variant, suggest_params
from runner.chain import StudyState
from runner.session import Session
from runner.store import ClaimedRun


def optuna_study_name(session: Session, study: str) -> str:
    return f"{session.plan.name}.{session.profile}.{study}"


def load_optuna_study(session: Session, spec):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=optuna_study_name(session, spec.name), storage=_storage(session.optuna_storage),
        sampler=make_sampler(spec.search, seed=spec.seeds[0]), pruner=make_pruner(spec.search),
        direction="maximize", load_if_exists=True)


def _storage(url: str):
    import optuna

    if url.startswith("sqlite"):
        # A generous busy timeout: many workers may share the file (WAL is set by ablate's store).
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url, heartbeat_interval=None)


def claim_search_cell(session: Session, state: StudyState, worker: str, lease_s: float) -> Optional[ClaimedRun]:
    """Take one unsampled cell, ask Optuna for its parameters, bind and claim its run."""
    store = session.store
    cell = store.claim_search_cell(state.study_id, worker)
    if cell is None:
        return None
    try:
        ostudy = load_optuna_study(session, state.spec)
        trial = ostudy.ask()
        params = suggest_params(state.spec.search, trial)
        variant = search_variant(params, trial.number)
        config = resolve_config(state.base, state.spec, variant, cell["seed"])
        store.bind_search_cell(cell["id"], trial.number, config.flat(), config.identity_hash(), params)
    except BaseException:
        store.release_search_cell(cell["id"])
        raise
    claimed = store.claim_run(config.identity_hash(), worker, lease_s)
    if claimed is None:  # Optuna proposed a config that was already trained: reuse its result
        run = store.run(config.identity_hash())
        if run and run["status"] == "done":
            ostudy.tell(trial.number, run["final_grader"])
    return claimed


class OptunaLink:
    """Report intermediate graders to Optuna's pruner and tell it the outcome of a trial."""

    def __init__(self, session: Session, spec, trial_number: int):
        import optuna

        self._optuna = optuna
        self.study = load_optuna_study(session, spec)
        self.trial_number = trial_number
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, trial_number)
        self.trial = optuna.trial.Trial(self.study, trial_id)

    @classmethod
    def for_run(cls, session: Session, cells: list[dict]) -> Optional["OptunaLink"]:
        specs = {s.name: s for s in session.plan.studies}
        for cell in cells:
            spec = specs.get(cell["study"])
            if spec is not None and spec.kind == "search" and (cell["optuna_trial"] is not None
                                                                and cell["optuna_trial"] >= 0):
                return cls(session, spec, cell["optuna_trial"])
        return None

    def should_prune(self, grader: float, epoch: int) -> bool:
        self.trial.report(grader, epoch)
        return self.trial.should_prune()

    def _tell(self, state, value=None) -> None:
        try:
            self.study.tell(self.trial_number, value, state=state)
        except (RuntimeError, ValueError):
            pass  # already told (a resumed trial whose first attempt finished telling)

    def tell_done(self, grader: float) -> None:
        self._tell(self._optuna.trial.TrialState.COMPLETE, grader)

    def tell_pruned(self) -> None:
        self._tell(self._optuna.trial.TrialState.PRUNED)

    def tell_failed(self) -> None:
        self._tell(self._optuna.trial.TrialState.FAIL)
