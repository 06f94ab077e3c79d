"""A study file over a task of one's own: ``task:`` beside the file, its Config's keys checked
with the same located errors as the built-in task's, its metrics' objective, its identities."""
import sys
import textwrap

import pytest

from ablations import (Objective, StudyFileError, expand_study, flat, identity_hash,
                       load_study_file, profile_base)
from tests.support.tasks import write_task

MODULES = ("my_task", "other_task")


@pytest.fixture
def here(tmp_path):
    """A directory for a study file and its task modules; the modules are forgotten afterwards
    (the next test writes its own under the same names)."""
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)
    while str(tmp_path.resolve()) in sys.path:
        sys.path.remove(str(tmp_path.resolve()))


def study(directory, text, name="studies.yaml"):
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


USER_STUDY = """\
    name: mine
    task: my_task
    defaults: {width: 4}
    studies:
      - name: widths
        seeds: 2
        grid: {width: [4, 16]}
      - name: act
        objective: {metric: accuracy, goal: min}
        variants:
          - {name: tanh, set: {activation: tanh}}
    """


def test_a_user_task_is_loaded_from_beside_the_study_file(here):
    write_task(here)
    plan = load_study_file(study(here, USER_STUDY))
    assert plan.task.name == "my_task" and set(plan.task.config_keys) >= {"width", "activation"}
    trials = expand_study(plan.study("widths"), profile_base(plan))
    assert [(t.variant, t.seed) for t in trials] == [("width=4", 0), ("width=4", 1),
                                                    ("width=16", 0), ("width=16", 1)]
    assert all(type(t.config).__module__ == "my_task" for t in trials)
    assert [t.config.seed for t in trials] == [0, 1, 0, 1]  # its Config has a seed: set per trial
    assert len({t.config_hash for t in trials}) == 4


@pytest.mark.parametrize("line_text, line, key, needles", [
    ("        grid: {widht: [4, 16]}", 7, "studies[0].grid.widht",
     ["unknown key 'widht'", "did you mean 'width'"]),
    # a key of the built-in task is no key of this one
    ("        grid: {lr: [0.1]}", 7, "studies[0].grid.lr",
     ["unknown key 'lr'", "not a config key of task 'my_task'"]),
    ("        grid: {width: [4, 0]}", 7, "studies[0].grid.width[1]",
     ["invalid value 0", "greater than or equal to 1"]),
    ("        grid: {activation: [relu, sigmoid]}", 7, "studies[0].grid.activation[1]",
     ["sigmoid", "'relu' or 'tanh'"]),
    ("        grid: {seed: [1, 2]}", 7, "studies[0].grid.seed", ["seeds"]),
    ("        width: 3", 7, "studies[0].width", ["config keys go under"]),
])
def test_a_user_tasks_keys_and_values_get_located_errors(here, line_text, line, key, needles):
    write_task(here)
    lines = textwrap.dedent(USER_STUDY).splitlines()
    lines[6] = line_text.strip().rjust(len(line_text.strip()) + 4)
    path = study(here, "\n".join(lines) + "\n")
    with pytest.raises(StudyFileError) as caught:
        load_study_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    for needle in needles:
        assert needle in message, message


def test_a_user_tasks_objective_default_and_a_goal_min(here):
    """No objective anywhere: the task's default (its first metric, with its declared goal). A
    study's ``goal: min`` on a metric declared ``max`` is taken as written."""
    write_task(here)
    plan = load_study_file(study(here, USER_STUDY))
    assert plan.objective == Objective("error", "min")
    assert plan.study("widths").objective == Objective("error", "min")
    assert plan.study("act").objective == Objective("accuracy", "min")


@pytest.mark.parametrize("task_line, write, needles", [
    ("task: no_such_module", {}, ["task 'no_such_module'", "cannot import module 'no_such_module'"]),
    ("task: my_task", {"fit": False}, ["task 'my_task' lacks fit"]),
    ("task: my_task:Nothing", {}, ["module 'my_task' has no attribute 'Nothing'"]),
    ("task: 'my-task'", {}, ["not a built-in task"]),
])
def test_a_task_that_cannot_be_loaded_is_a_located_error(here, task_line, write, needles):
    write_task(here, **write)
    path = study(here, USER_STUDY.replace("task: my_task", task_line))
    with pytest.raises(StudyFileError) as caught:
        load_study_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: task: "), message
    for needle in needles:
        assert needle in message, message


def test_two_tasks_never_share_an_identity(here):
    """The same Config text and values under two task names: two hashes. Within one task the
    execution keys are left out and the seed counts, also for a Config without a seed field."""
    write_task(here, "my_task")
    write_task(here, "other_task")
    mine = load_study_file(study(here, USER_STUDY))
    other = load_study_file(study(here, USER_STUDY.replace("task: my_task", "task: other_task"),
                                  "other.yaml"))
    ours, theirs = (expand_study(p.study("widths"), profile_base(p))[0] for p in (mine, other))
    assert flat(ours.config) == flat(theirs.config)
    assert ours.config_hash != theirs.config_hash
    assert identity_hash(mine.task, ours.config) == ours.config_hash
    on_gpu = ours.config.model_copy(update={"device": "cuda:1"})
    assert identity_hash(mine.task, on_gpu) == ours.config_hash


def test_a_config_without_a_seed_field_is_seeded_by_its_trial(here):
    write_task(here, seed=False)
    plan = load_study_file(study(here, USER_STUDY))
    trials = expand_study(plan.study("widths"), profile_base(plan))
    assert "seed" not in flat(trials[0].config)
    assert trials[0].config == trials[1].config and trials[0].seed != trials[1].seed
    assert trials[0].config_hash != trials[1].config_hash
    assert identity_hash(plan.task, trials[1].config, seed=1) == trials[1].config_hash


OBJECTIVES = """\
    name: mine
    task: my_task
    {file}
    profiles:
      parent:
        {parent}
      child:
        extends: parent
      bare: {{}}
    studies:
      - name: own
        objective: {{metric: accuracy, tie_break: [loss]}}
        grid: {{width: [4]}}
      - name: inherits
        grid: {{width: [8]}}
    """


def test_objective_precedence_study_profile_file_task(here):
    write_task(here)
    path = study(here, OBJECTIVES.format(file="objective: loss",
                                         parent="objective: {metric: accuracy, goal: min}"))
    own = Objective("accuracy", "max", (("loss", "min"),))
    expected = {  # profile -> (plan objective = the 'inherits' study's)
        "parent": Objective("accuracy", "min"),  # the profile's over the file's
        "child": Objective("accuracy", "min"),   # the parent's, through extends
        "bare": Objective("loss", "min"),        # the file's
    }
    for profile, objective in expected.items():
        plan = load_study_file(path, profile)
        assert plan.objective == objective, profile
        assert plan.study("inherits").objective == objective, profile
        assert plan.study("own").objective == own, profile  # the study's over everything
    path = study(here, OBJECTIVES.format(file="", parent="description: no objective"))
    plan = load_study_file(path, "child")
    assert plan.objective == plan.study("inherits").objective == Objective("error", "min")  # the task's
