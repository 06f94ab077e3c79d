"""The core (models, data, metrics, losses, training loop) must run where mlflow and optuna are
not installed, e.g. a bare GPU box used for benchmarks."""
import subprocess
import sys

CORE = ["models", "models.factory", "runner.tasks.mtl.data.batches", "runner.tasks.mtl.data.packed", "runner.tasks.mtl.data.synth",
        "runner.tasks.mtl.scoring", "runner.tasks.mtl.losses", "runner.tasks.mtl.train", "runner.tasks.mtl.assets", "runner.tasks.mtl.pretrain"]


def test_core_imports_without_mlflow_or_optuna():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('mlflow', 'optuna'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {CORE!r}: __import__(m)\n"
        "import torch\n"
        "from models import build_model\n"
        "from models.config import ModelConfig\n"
        "m = build_model(ModelConfig(encoder='resnet18', architecture='branched'))\n"
        "out = m(torch.zeros(2, 3, 64, 64))\n"
        "assert out['semseg'][-1].shape == (2, 19, 64, 64)\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
