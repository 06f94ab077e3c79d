"""``ablate run``'s plain progress lines (output not a terminal: a batch job's log): each outcome
line carries the trainings finished and the ETA of the rest (issue 12), and an ``[eta]`` line
comes every ``eta_every_s`` when no trial finished."""
from __future__ import annotations

import re

from runner.orchestrate.progress import ProgressView
from runner.orchestrate.walk import studies_in_scope

STUDIES = """\
  - name: lr
    variants:
      - {name: fast, set: {lr: 0.01}}
      - {name: slow, set: {lr: 0.001}}
  - name: more
    start_from: previous
    variants:
      - {name: wd, set: {weight_decay: 0.001}}
"""


def test_plain_lines_carry_the_eta_of_what_is_left(tmp_path, kit, capsys):
    session = kit.open_session(kit.write_study_file(tmp_path, kit.fake_study("eta", STUDIES)), tmp_path / "ws")
    kit.run_fake(session, only=["lr"])
    view = ProgressView(session, studies_in_scope(session, None), slots=1, live=True, eta_every_s=3600)
    assert view.lines  # pytest's stdout is not a terminal
    capsys.readouterr()
    view._print_new_outcomes()
    lines = capsys.readouterr().out.splitlines()
    # 'more' is left: one training of 6 steps, estimated from the finished runs' seconds per step
    assert len(lines) == 2 and all(re.fullmatch(r"\[done\] lr / \w+ / seed 0 -- 2/3 trainings finished, "
                                                r"ETA \d+ s", line) for line in lines), lines
    view._print_new_outcomes()  # nothing new, and the hour is not over: silent
    assert capsys.readouterr().out == ""
    view.eta_every_s = 0
    view._print_new_outcomes()
    assert re.fullmatch(r"\[eta\] -- 2/3 trainings finished, ETA \d+ s\n", capsys.readouterr().out)
