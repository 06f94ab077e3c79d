"""The built-in task ``mtl`` behind the task seam: ``prepare``, ``fit`` and ``count_parameters``
driven through a real :class:`runner.orchestrate.context.TrialContext` (recorder in memory) on a
tiny synthetic set rendered into the workspace, as a worker drives any task."""
import math
import subprocess
import sys

import pytest
import torch
import torchvision.models._api as tv_api
from PIL import Image

from ablations.errors import InputError
from runner.tasks.mtl.config import Config as TrainConfig
from models import build_model, count_parameters as count_built
from models.weights import EncoderWeightsError
from runner.orchestrate.context import TrialContext, read_checkpoint
from runner.tasks.mtl import count_parameters, fit, prepare
from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import CLASS_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(data_root="synthetic", synthetic_train=8, synthetic_val=4, synthetic_size=(64, 128),
            crop_size=(64, 128), encoder="resnet18", encoder_weights="none", head="plain", decoder="none",
            architecture="joint", optimizer="adam", lr=1e-3, epochs=2, steps_per_epoch=2, batch_size=2,
            val_batch_size=4)
DECLARED = {"grader", "iou", "si_logrmse", "grader_unclamped"}
EPOCH_METRICS = DECLARED | {"lr", "epoch_loss", "epoch_loss_semseg", "epoch_loss_depth"} \
    | {f"iou_{name.replace(' ', '_')}" for name in CLASS_NAMES}


class OwnInputError(Exception):
    """A ctx's bad-input class that is not ablate's: fit must raise the ctx's, whatever it is."""


class OwnInputErrorContext(TrialContext):
    InputError = OwnInputError


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One workspace for the module: the synthetic set is rendered and packed once."""
    return tmp_path_factory.mktemp("ws")


def run_fit(make_ctx, run_dir, workspace, config=None, **kw):
    ctx = make_ctx(run_dir, workspace=workspace, **kw)
    return fit(prepare(config or TrainConfig(**TINY), ctx), ctx), ctx


@pytest.fixture(scope="module")
def reference(tmp_path_factory, make_ctx, workspace):
    """An uninterrupted fit of TINY: (its result, its ctx)."""
    return run_fit(make_ctx, tmp_path_factory.mktemp("reference") / "run", workspace)


def test_importing_the_task_imports_no_torch():
    """Loading a study file loads its task: the mtl module must not pull torch in."""
    code = "import sys, runner.tasks.mtl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_logs_every_epochs_flat_metrics_the_steps_and_the_samples(reference):
    result, ctx = reference
    rec = ctx.recorder
    assert [(epoch, step) for epoch, step, _ in rec.epochs] == [(1, 2), (2, 4)]
    for _, _, metrics in rec.epochs:
        assert set(metrics) == EPOCH_METRICS
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert metrics["grader_unclamped"] == metrics["iou"] - metrics["si_logrmse"]
        assert metrics["iou"] == pytest.approx(sum(metrics[f"iou_{n.replace(' ', '_')}"] for n in CLASS_NAMES) / 19)
    assert result == rec.epochs[-1][2]  # the final metrics: the last epoch's, declared ones included
    assert [step for step, _ in rec.steps] == [1, 2, 3, 4]
    assert all(set(scalars) == {"loss", "loss_semseg", "loss_depth"} for _, scalars in rec.steps)
    assert rec.steps[0][1]["loss"] == pytest.approx(
        0.5 * rec.steps[0][1]["loss_semseg"] + 0.5 * rec.steps[0][1]["loss_depth"], rel=1e-5)
    samples = ctx.run_dir / "samples.png"
    assert rec.artifacts == [(str(samples), "samples")]
    assert Image.open(samples).size == (5 * 128, 4 * 64)  # 5 panels, one row per val image
    saved = read_checkpoint(ctx.run_dir)  # the last checkpoint, at the end: a rerun trains nothing
    assert (saved.position.epoch, saved.position.step) == (2, 4)


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # mid-epoch, epoch boundary, next epoch
def test_stopped_fit_returns_none_and_resumes_to_the_uninterrupted_metrics(tmp_path, make_ctx, workspace,
                                                                           reference, stop_after):
    expected, reference_ctx = reference
    stopped, first = run_fit(make_ctx, tmp_path / "run", workspace, stop_after=stop_after)
    assert stopped is None
    saved = read_checkpoint(tmp_path / "run")
    assert (saved.position.epoch, saved.position.step) == (stop_after // 2, stop_after)
    assert first.recorder.artifacts == []  # samples only at the end

    resumed, second = run_fit(make_ctx, tmp_path / "run", workspace)
    assert resumed == expected  # exact on the CPU
    assert first.recorder.epochs + second.recorder.epochs == reference_ctx.recorder.epochs
    assert first.recorder.steps + second.recorder.steps == reference_ctx.recorder.steps
    assert second.recorder.artifacts == [(str(tmp_path / "run" / "samples.png"), "samples")]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and a download that fails (never the network)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(url, *args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("case", ["no data set", "data set too small", "no weights file"])
def test_bad_data_and_encoder_weights_are_the_ctxs_input_error(tmp_path, make_ctx, workspace, case):
    """Bad input is the ctx's InputError (the trial is handed back, exit 2), never a failed trial:
    found while preparing (a data_root that is no directory), while training (fewer images than a
    batch) or building the model (a weights file that is not there). The message is the one line
    naming the file; the trial logged nothing."""
    config, cause, named = {
        "no data set": (dict(data_root=str(tmp_path / "nowhere")), DataError, tmp_path / "nowhere"),
        "data set too small": (dict(batch_size=16), DataError, "fewer than"),
        "no weights file": (dict(encoder_weights=str(tmp_path / "w.pt")), EncoderWeightsError, tmp_path / "w.pt"),
    }[case]
    with pytest.raises(OwnInputError, match=str(named)) as info:
        run_fit(make_ctx, tmp_path / "run", workspace, TrainConfig(**{**TINY, **config}), cls=OwnInputErrorContext)
    assert isinstance(info.value.__cause__, cause) and str(info.value) == str(info.value.__cause__)
    assert "\n" not in str(info.value)
    assert read_checkpoint(tmp_path / "run") is None


def test_missing_imagenet_weights_are_ablates_input_error_with_exit_code_2(tmp_path, make_ctx, workspace,
                                                                           offline_hub):
    """Moved from tests/models (``models`` no longer knows ablate's InputError): the real
    context's InputError, exit code 2, naming the file to copy and where."""
    config = TrainConfig(**{**TINY, "encoder_weights": "imagenet"})
    with pytest.raises(InputError) as info:
        run_fit(make_ctx, tmp_path / "run", workspace, config)
    assert info.value.exit_code == 2 and TrialContext.InputError is InputError
    assert "resnet18-f37072fd.pth" in str(info.value) and str(offline_hub) in str(info.value)


# the report's setting (tests/models/test_models_param_counts.py: SPEC 5, report Tables 5 and 6)
REPORT = dict(encoder="resnet34", head="aspp", decoder="deeplabv3p", encoder_output_stride=16)


@pytest.mark.parametrize("architecture, expected", [
    ("joint", 26_716_084), ("branched", 32_142_356), ("distillation", 37_095_656)])
def test_count_parameters_equals_the_built_models_count(tmp_path, architecture, expected):
    """Counted on the meta device with the weights left out: a weights file that is not there
    changes nothing (nothing is read), and the count is the built model's."""
    config = TrainConfig(**REPORT, architecture=architecture, encoder_weights=str(tmp_path / "absent.pt"))
    assert count_parameters(config) == expected
    built = build_model(config.model_copy(update={"encoder_weights": "none"}).to_model_config())
    assert count_built(built) == expected
