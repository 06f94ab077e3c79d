"""Read-only commands over a study file and its result store: status, inspect, results, report.

None of them writes the result store: they walk the chain with
:func:`runner.orchestrate.walk.survey`, which joins the cells the study file declares with what is
stored, so they also answer on a workspace that does not exist yet (everything pending) and while
a run is writing. Only ``report`` creates something: ``<workspace>/report/`` (and ``inspect
--calibrate`` its calibration cache, in a workspace that exists).
"""
from runner.views.cost import print_cost_preview
from runner.views.export import export_results, results_frame
from runner.views.inspect import print_inspect, projected_bases
from runner.views.report import write_report
from runner.views.status import print_status

__all__ = ["export_results", "print_cost_preview", "print_inspect", "print_status", "projected_bases", "results_frame", "write_report"]
