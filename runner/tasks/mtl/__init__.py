"""The built-in task: the report's multi-task network (semantic segmentation + depth).

``task: mtl`` in a study file (the default) loads this module through the ``ablate.tasks`` entry
point. Importing it must stay light (pydantic only): ``ablate inspect`` and every study-file check
load it, and torch is imported only when a trial trains.
"""
from runner.tasks.mtl.config import Config

#: What ``fit`` returns and every epoch logs, with the direction that is better. ``grader`` is the
#: course's score (clamped at 0); ``grader_unclamped`` = IoU - SI-logRMSE tells apart variants the
#: clamp makes equal.
metrics = {"grader": "max", "iou": "max", "si_logrmse": "min", "grader_unclamped": "max"}
objective = {"metric": "grader", "tie_break": ["grader_unclamped"]}
metric_labels = {"grader": "Grader", "iou": "SemSeg (IoU)", "si_logrmse": "Depth (SI-logRMSE)",
                 "grader_unclamped": "Grader, unclamped"}
#: Config keys that do not change the numbers (beyond float rounding): left out of the identity,
#: so a trial finished on a GPU is not retrained on the CPU.
execution_keys = ("device", "amp", "channels_last", "compile")

# --- training (the mtl branch): fit, prepare, count_parameters -------------------------------


def fit(config, ctx):
    """Interim, on the ablations branch only: the mtl branch defines the real ``fit`` here (a
    task needs one to load); the merge keeps the mtl branch's and drops this one."""
    raise NotImplementedError("runner.tasks.mtl.fit comes with the mtl branch")
