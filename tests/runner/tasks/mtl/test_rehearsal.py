"""The mtl task's rehearsal and cost hooks (issue 12): a rehearsed config keeps the model, crop and
batch sizes but trains 2 steps and validates 1 batch; a missing data root becomes synthetic scenes
of the crop size and missing ImageNet weights random init, each with a note naming the fix; its
miniature is the same at crops of at most 64x64 with 2 validation images; the cost of a config is
its signature (what a step's time depends on) and its training steps."""
from __future__ import annotations

from runner.tasks.mtl import cost, miniature_config, rehearsal_config
from runner.tasks.mtl.config import Config
from runner.tasks.mtl.rehearsal import REPORT_TRAIN_IMAGES

FULL = dict(encoder="resnet34", crop_size=[256, 256], batch_size=4, val_batch_size=8, epochs=16)


def config(**keys) -> Config:
    return Config.model_validate({**FULL, **keys})


def test_missing_data_root_becomes_synthetic_scenes_of_the_crop_size(tmp_path):
    shrunk, notes = rehearsal_config(config(data_root=str(tmp_path / "miniscapes")))
    assert (shrunk.data_root, list(shrunk.synthetic_size), list(shrunk.crop_size)) == ("synthetic", [256, 256],
                                                                                        [256, 256])
    assert (shrunk.epochs, shrunk.steps_per_epoch, shrunk.train_samples, shrunk.val_samples) == (1, 2, 8, 8)
    assert (shrunk.encoder, shrunk.batch_size, shrunk.val_batch_size) == ("resnet34", 4, 8)
    assert len(notes) == 1 and str(tmp_path / "miniscapes") in notes[0] and "synthetic scenes of 256x256" in notes[0]


def test_an_existing_data_root_is_kept(tmp_path):
    shrunk, notes = rehearsal_config(config(data_root=str(tmp_path)))
    assert (shrunk.data_root, notes) == (str(tmp_path), [])


def test_missing_imagenet_weights_are_named_with_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    shrunk, notes = rehearsal_config(config(data_root="synthetic", encoder_weights="imagenet"))
    assert shrunk.encoder_weights == "none"
    assert len(notes) == 1 and "resnet34-b627a593.pth" in notes[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in notes[0]
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "resnet34-b627a593.pth").write_bytes(b"weights")
    shrunk, notes = rehearsal_config(config(data_root="synthetic", encoder_weights="imagenet"))
    assert (shrunk.encoder_weights, notes) == ("imagenet", [])


def test_cost_signature_ignores_what_does_not_change_a_step_and_counts_steps(tmp_path):
    missing = str(tmp_path / "absent")
    signature, steps, note = cost(config(data_root=missing))
    assert steps == 16 * (REPORT_TRAIN_IMAGES // 4) and "20,000" in note
    assert cost(config(data_root=missing, lr=0.5, seed=3, epochs=24))[0] == signature  # same step time
    assert cost(config(data_root=missing, encoder_weights="imagenet"))[0] == signature
    assert cost(config(data_root=missing, batch_size=8))[0] != signature
    assert cost(config(data_root=missing, encoder="resnet18"))[0] != signature
    assert cost(config(data_root=missing, steps_per_epoch=12))[1] == 16 * 12
    (tmp_path / "root" / "train" / "rgb").mkdir(parents=True)
    for i in range(10):
        (tmp_path / "root" / "train" / "rgb" / f"{i}.png").write_bytes(b"")
    assert cost(config(data_root=str(tmp_path / "root")))[1:] == (16 * (10 // 4), None)


def test_a_miniature_keeps_everything_but_the_input_size_and_the_validation_images(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = config(data_root=str(tmp_path / "miniscapes"), encoder_weights="imagenet", architecture="distillation_se",
                  lr=3e-4, loss_weight_seg=0.7, depth_unit="log", batch_size=8)
    full, full_notes = rehearsal_config(real)
    mini, notes = miniature_config(real)
    assert (list(mini.crop_size), list(mini.synthetic_size), mini.val_batch_size, mini.val_samples) == \
        ([64, 64], [64, 64], 2, 2)
    changed = {k for k, v in mini.flat().items() if full.flat()[k] != v}
    assert changed == {"crop_size", "synthetic_size", "val_batch_size", "val_samples"}
    assert notes == ["miniature: 64x64 crops of 64x64 synthetic scenes, validation on 2 images", *full_notes]
    # an existing root is read as configured; a size already below 64 is not made larger
    small, notes = miniature_config(config(data_root=str(tmp_path), crop_size=[32, 64], val_batch_size=1))
    assert (small.data_root, list(small.crop_size), small.val_batch_size) == (str(tmp_path), [32, 64], 1)
    assert notes == ["miniature: 32x64 crops, validation on 1 image"]
