"""The built-in task's config: the resolved, flat configuration of one training run.

One flat namespace (like segmentation_models_pytorch's keyword config) so that every key is an
MLflow param, a column in the result database and a possible ablation axis in ``studies.yaml``.
The model knobs are :class:`models.config.ModelConfig`'s, inherited, not repeated; the data,
optimisation and execution keys are added here. Validation lives next to the defaults, so that
``ablate train`` and the study file reject the same mistakes with the same words.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from models.config import NUM_SEMSEG_CLASSES, ModelConfig

#: Largest image side (synthetic_size, crop_size): Cityscapes' full frames are 1024x2048. The
#: synthetic renderer needs about 160 MB for one 1024x2048 scene, so 60000x60000 (a typo) would
#: ask for terabytes and end in a MemoryError instead of this message.
MAX_IMAGE_SIDE = 2048
#: Largest sample count (synthetic_train/val): 30x Cityscapes' 2975 training images.
MAX_SYNTHETIC_SAMPLES = 100_000
#: Largest batch: a batch of 4096 crops is far beyond what fits one accelerator; beyond it a
#: value is a typo.
MAX_BATCH = 4096

_ImageSide = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIDE)]
_CropSide = Annotated[int, Field(ge=32, le=MAX_IMAGE_SIDE)]


class Config(ModelConfig):
    """Everything that decides what a trial computes. Defaults are the course code's (SPEC §4)."""

    # strict: "lr: '0.01'" or "amp: 'yes'" is an error, not a silent coercion (a coerced value
    # would also be stored and named as written). Tuples stay lax: YAML and JSON give lists.
    # allow_inf_nan=False: every float, tuple elements included, is finite. JSON has no inf or
    # NaN: such a value would be stored as null and fail validation at every later resolve.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    # --- model: ModelConfig's fields; the data sets have the 19 Cityscapes classes -----------
    num_classes: Literal[NUM_SEMSEG_CLASSES] = NUM_SEMSEG_CLASSES

    # --- data -------------------------------------------------------------------------------
    data_root: str = Field("synthetic", description="Miniscapes root, or 'synthetic' to render "
                           "a synthetic set into the workspace on first use")
    synthetic_train: int = Field(256, ge=1, le=MAX_SYNTHETIC_SAMPLES)
    synthetic_val: int = Field(64, ge=1, le=MAX_SYNTHETIC_SAMPLES)
    synthetic_size: tuple[_ImageSide, _ImageSide] = Field((64, 128), strict=False)
    synthetic_seed: int = 0
    train_samples: Optional[int] = Field(None, ge=1, description="use only the first N train images")
    val_samples: Optional[int] = Field(None, ge=1, description="use only the first N val images")
    crop_size: tuple[_CropSide, _CropSide] = Field((256, 256), strict=False)
    augment_flip: bool = False
    augment_scale: Optional[tuple[float, float]] = Field(None, strict=False)
    depth_unit: Literal["meters", "log"] = "meters"

    # --- optimisation -----------------------------------------------------------------------
    seed: int = 0
    epochs: int = Field(16, ge=1)
    steps_per_epoch: Optional[int] = Field(None, ge=1, description="cap on steps per epoch")
    batch_size: int = Field(4, ge=1, le=MAX_BATCH)
    val_batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    loss_weight_seg: float = Field(0.5, ge=0)
    loss_weight_depth: float = Field(0.5, ge=0)

    # --- execution (does not change the numbers beyond float rounding: the task's
    # execution_keys, left out of the identity hash) ------------------------------------------
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False

    @model_validator(mode="after")
    def _check_consistency(self) -> "Config":
        if self.loss_weight_seg + self.loss_weight_depth <= 0:
            raise ValueError("loss_weight_seg + loss_weight_depth must be > 0")
        if any(c % 32 for c in self.crop_size):
            raise ValueError(f"crop_size {list(self.crop_size)} must be multiples of 32")
        if self.augment_scale is not None and not 0 < self.augment_scale[0] <= self.augment_scale[1]:
            raise ValueError("augment_scale must be [low, high] with 0 < low <= high")
        return self

    def to_model_config(self) -> ModelConfig:
        """The model knobs alone: what ``models.build_model`` takes."""
        return ModelConfig(**{name: getattr(self, name) for name in ModelConfig.model_fields})

    def flat(self) -> dict:
        """JSON-friendly flat dict (tuples as lists): MLflow params, DB rows, checkpoints."""
        return json.loads(self.model_dump_json())

    def identity_hash(self) -> str:
        """This config's trial identity under the task ``mtl``: ``ablations.plan.identity_hash``.

        For the callers that hold a config but not the task (the runner's search studies and
        ``ablate train``), so that they agree with the hashes of the study file's trials."""
        from ablations.plan import identity_hash
        from ablations.task import load_task

        return identity_hash(load_task("mtl"), self)

