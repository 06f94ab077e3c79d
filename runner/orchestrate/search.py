"""Optuna-driven studies: Optuna samples and prunes, ablate claims, trains and records.

Each search cell (``search-000`` ...) is claimed atomically in the result store *before* Optuna
is asked for parameters, so n_trials cells give exactly n_trials Optuna trials even with many
workers (Optuna's own samplers, GridSampler included, can hand out the same point twice at the
tail). Optuna's storage (SQLite in the workspace, or PostgreSQL) keeps its study, so samplers see
every finished trial and optuna-dashboard shows them. The result store stays the record: a search
trial's run, metrics and checkpoint live there like any other's.

A claim lasts a lease. A worker killed between the claim and the bind leaves a claim that
expires; the next worker samples the cell again and ends FAIL the Optuna trial the dead one may
have asked for (each trial carries its cell's id from the INSERT that creates it, so it is found
even when the kill came inside ``ask``). A worker stalled past its claim finds its bind refused
and ends its own trial FAIL.
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from ablations import StudySpec, flat, identity_hash, resolve_config
from ablations.search import make_pruner, make_sampler, search_variant, suggest_params
from runner.orchestrate.session import Session
from runner.store import ClaimedRun, RunCell, RunRecord


def optuna_study_name(session: Session, study: str, base: dict) -> str:
    """``<plan>.<profile>.<study>.<base tag>``: one Optuna study per base the search runs on.

    The base is the winner of the study this one starts from; when it moves (an earlier study
    was edited or re-run), trials sampled on the old base say nothing about the new one, so the
    search starts over in a new Optuna study and the old one stays for optuna-dashboard. Under
    ``identity: {code: strict}`` the code version counts as part of the base."""
    code = session.plan.study(study).code_version
    tag = hashlib.sha1(json.dumps(base if code is None else {"base": base, "code": code},
                                  sort_keys=True).encode()).hexdigest()[:8]
    return f"{session.plan.name}.{session.profile}.{study}.{tag}"


def rebase_search_cells(session: Session, study_id: int, optuna_study: str) -> None:
    """Put back the cells sampled on an earlier base and end their Optuna trials (FAIL), so no
    trial of the old study is left RUNNING; they are sampled again in ``optuna_study``."""
    stale = session.store.unbind_search_cells(study_id, keep_optuna_study=optuna_study)
    if not any(c.optuna_trial is not None and c.optuna_trial >= 0 for c in stale):
        return
    import optuna

    for cell in stale:
        try:
            old = optuna.load_study(study_name=cell.optuna_study, storage=session.optuna())
        except (KeyError, RuntimeError, ValueError):
            continue  # the old study is gone (or its storage cannot be read)
        # already told when it finished on the old base
        _tell_quietly(old, cell.optuna_trial, optuna.trial.TrialState.FAIL)


def load_optuna_study(session: Session, spec, study_name: str, cell_index: int = 0):
    """The Optuna study ``study_name`` of ``spec``, with a sampler seeded for the cell about to be sampled.

    A fresh study object (and sampler) is made for every ask, in any process. Seeding every
    sampler with the same seed made each ask start from the same random state, so every
    startup trial of TPE/random proposed the *same* point (6 identical trials in search-demo).
    The seed is therefore (study seed, cell index): reproducible, and different for each cell.
    The direction is the study's objective's goal.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.seeds[0] * 100_003 + cell_index
    return optuna.create_study(
        study_name=study_name, storage=session.optuna(),
        sampler=make_sampler(spec.search, seed=seed), pruner=make_pruner(spec.search),
        direction=spec.objective.direction, load_if_exists=True)


def _cell_index(cell) -> int:
    """``search-007`` -> 7 (the cell's position in the search's budget)."""
    try:
        return int(str(cell.variant).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return int(cell.id)


CELL_ATTR = "ablate.cell"  # user attribute of an Optuna trial: the id of the cell it was asked for


def claim_search_cell(session: Session, study_id: int, spec: StudySpec, base: dict, worker: str,
                      lease_s: float) -> Optional[ClaimedRun]:
    """Take one cell to sample, ask Optuna for its parameters, bind and claim its run."""
    import optuna

    store = session.store
    cell = store.claim_search_cell(study_id, worker, lease_s)
    if cell is None:
        return None
    trial = None
    try:
        study_name = optuna_study_name(session, spec.name, base)
        ostudy = load_optuna_study(session, spec, study_name, _cell_index(cell))
        if cell.claimed_by is not None:  # its claimant died (or stalled) while sampling it
            _fail_asked_for(ostudy, cell.id)
        trial = _ask_for(ostudy, cell.id)
        params = suggest_params(spec.search, trial)
        variant = search_variant(params, trial.number)
        config = resolve_config(base, spec, variant, cell.seed)
        config_hash = identity_hash(spec.task, config, cell.seed, spec.code_version)
        bound = store.bind_search_cell(cell.id, study_name, trial.number, flat(config), config_hash, params,
                                       task=spec.task.name, worker=worker)
    except BaseException:
        store.release_search_cell(cell.id, worker)
        if trial is not None:
            _tell_quietly(ostudy, trial.number, optuna.trial.TrialState.FAIL)
        raise
    if not bound:  # stalled past the claim: another worker samples the cell now
        _tell_quietly(ostudy, trial.number, optuna.trial.TrialState.FAIL)
        return None
    claimed = store.claim_run(config_hash, worker, lease_s)
    if claimed is None:
        # Optuna proposed a config that another cell already trained (or is training): reuse
        # its outcome. A run still in progress tells this trial too when it ends (OptunaLink
        # tells every Optuna trial bound to the run), so no trial is left RUNNING.
        _tell_outcome(ostudy, trial.number, store.run(config_hash), spec.objective.metric)
    return claimed


def _ask_for(ostudy, cell_id: int):
    """``ostudy.ask()``, with ``CELL_ATTR`` set on the trial in the INSERT that creates it: a
    worker killed anywhere after that leaves a RUNNING trial :func:`_fail_asked_for` can find."""
    from datetime import datetime

    import optuna

    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=datetime.now(),
        datetime_complete=None, params={}, distributions={}, user_attrs={CELL_ATTR: cell_id},
        system_attrs={}, intermediate_values={}, trial_id=-1)
    trial_id = ostudy._storage.create_new_trial(ostudy._study_id, template_trial=template)
    return optuna.trial.Trial(ostudy, trial_id)


def _fail_asked_for(ostudy, cell_id: int) -> None:
    """End FAIL every trial still RUNNING that was asked for the cell: the cell is unbound (it is
    being sampled again), so such a trial belongs to a claimant that died or lost its claim."""
    import optuna

    for t in ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(CELL_ATTR) == cell_id:
            _tell_quietly(ostudy, t.number, optuna.trial.TrialState.FAIL)


def _tell_outcome(ostudy, number: int, run: Optional[RunRecord], metric: str) -> None:
    import optuna

    states = {"done": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    if not run or run.status not in states:
        return
    value = run.metrics.get(metric) if run.status == "done" else None
    _tell_quietly(ostudy, number, states[run.status], value)


def _tell_quietly(study, number: int, state, value: Optional[float] = None) -> None:
    """``study.tell(number, value, state=state)``; a trial already told (a resumed trial whose
    first attempt finished telling, a cell that finished on an old base) is left as it is."""
    try:
        study.tell(number, value, state=state)
    except (RuntimeError, ValueError):
        pass  # already told


class OptunaLink:
    """Report the intermediate objective to Optuna's pruner and tell it the outcome of a trial.

    One run can be bound to several Optuna trials (the sampler proposed a config twice while
    the first was still training): the first trial drives pruning, and every one of them is
    told the outcome, so none is left RUNNING in the Optuna study.
    """

    def __init__(self, session: Session, spec, study_name: str, trial_number: int, others: tuple = ()):
        import optuna

        self._optuna = optuna
        self.metric = spec.objective.metric
        self.study = load_optuna_study(session, spec, study_name)
        self.trial_number = trial_number
        self.others = list(others)  # (optuna study, trial number) of further bound trials
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, trial_number)
        self.trial = optuna.trial.Trial(self.study, trial_id)

    @classmethod
    def for_run(cls, session: Session, cells: list[RunCell], config: dict) -> Optional["OptunaLink"]:
        """The link of a run bound to search cells (None when no Optuna trial asked for it).
        ``config``: the run's config (its ``epochs``, when it has one, is the last epoch)."""
        specs = {s.name: s for s in session.plan.studies}
        bound = [(specs[c.study], c.optuna_study, c.optuna_trial) for c in cells
                 if c.study in specs and specs[c.study].kind == "search"
                 and c.optuna_study is not None and c.optuna_trial is not None and c.optuna_trial >= 0]
        if not bound:
            return None
        (spec, name, number), rest = bound[0], bound[1:]
        link = cls(session, spec, name, number, others=[
            (load_optuna_study(session, s, n) if n != name else None, t) for s, n, t in rest])
        link.epochs = config.get("epochs")
        return link

    epochs: Optional[int] = None  # the trial's last epoch: never pruned (it is already complete)

    def should_prune(self, metrics: dict, epoch: int) -> bool:
        """Report the epoch's objective; True to stop. Pruning after the last epoch would throw
        a finished result away (the trial would count as PRUNED, not COMPLETE): never then."""
        if self.metric not in metrics:
            return False
        self.trial.report(metrics[self.metric], epoch)
        if self.epochs is not None and epoch >= self.epochs:
            return False
        return self.trial.should_prune()

    def _tell(self, state, value=None) -> None:
        for study, number in [(self.study, self.trial_number), *self.others]:
            _tell_quietly(study or self.study, number, state, value)

    def tell_done(self, metrics: dict) -> None:
        self._tell(self._optuna.trial.TrialState.COMPLETE, metrics.get(self.metric))

    def tell_pruned(self) -> None:
        self._tell(self._optuna.trial.TrialState.PRUNED)

    def tell_failed(self) -> None:
        self._tell(self._optuna.trial.TrialState.FAIL)
