"""The training core (models/, the built-in task runner/tasks/mtl/, the trial context
runner/orchestrate/context.py) must import and run where mlflow and optuna are not installed,
e.g. a bare GPU box used for benchmarks: checked in an interpreter that cannot import them."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for package in ("models", "runner/tasks/mtl") for path in (ROOT / package).rglob("*.py")) \
    + ["runner.orchestrate.context"]

BLOCKED_RUN = """
import sys, tempfile
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mlflow', 'optuna'):
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
for m in MODULES:
    __import__(m)
import torch
from models import build_model
from models.config import ModelConfig
m = build_model(ModelConfig(encoder='resnet18', architecture='branched'))
out = m(torch.zeros(2, 3, 64, 64))
assert out['semseg'][-1].shape == (2, 19, 64, 64)

# one trial of the built-in task, loaded and driven as a worker does (a recorder in memory)
from pathlib import Path
from ablations.task import load_task
from runner.orchestrate.context import TrialContext

class Recorder:
    epochs = []
    def on_step(self, step, scalars): pass
    def record_steps(self, rows): pass
    def record_epoch(self, epoch, step, wall_time_s, metrics): self.epochs.append((epoch, step, dict(metrics)))
    def check_lease(self): pass
    def lease_lost(self): return False
    def log_artifact(self, path, artifact_path): pass

task = load_task('mtl')
config = task.Config(data_root='synthetic', synthetic_train=4, synthetic_val=2, synthetic_size=(64, 128),
                     crop_size=(64, 128), encoder='resnet18', encoder_weights='none', head='plain',
                     decoder='none', epochs=1, steps_per_epoch=1, batch_size=2, val_batch_size=2)
ws = Path(tempfile.mkdtemp())
ctx = TrialContext(run_dir=ws / 'runs' / 'one', workspace=ws, device='cpu', seed=0, recorder=Recorder())
final = task.fit(task.prepare(config, ctx), ctx)
assert set(task.metrics) <= set(final), final
assert [(e, s) for e, s, _ in Recorder.epochs] == [(1, 1)], Recorder.epochs
assert (ws / 'runs' / 'one' / 'checkpoint.pt').is_file()
blocked = sorted(n for n in sys.modules if n.split('.')[0] in ('mlflow', 'optuna'))
assert not blocked, blocked
print('ok')
"""


def test_core_imports_and_trains_without_mlflow_or_optuna():
    code = f"MODULES = {CORE!r}\n" + BLOCKED_RUN
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "runner.tasks.mtl.train" in CORE and "models.factory" in CORE and len(CORE) > 20
