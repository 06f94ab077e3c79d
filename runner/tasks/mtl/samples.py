"""Sample predictions as one PNG: input | semseg truth | semseg prediction | depth truth | depth
prediction, one row per validation image (colourised with the Cityscapes palette and a log-depth
grey ramp). Logged to MLflow so a run can be judged by eye."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runner.atomic import write_bytes_atomic

PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)],
    dtype=np.uint8)


def colourise_semseg(ids: np.ndarray) -> np.ndarray:
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    valid = ids < len(PALETTE)
    out[valid] = PALETTE[ids[valid]]
    return out


def colourise_depth(meters: np.ndarray) -> np.ndarray:
    """Near = bright, far = dark on a log scale over 4..300 m; invalid = black."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = 1.0 - (np.log(np.clip(meters, 4, 300)) - np.log(4)) / (np.log(300) - np.log(4))
    grey = np.where(np.isfinite(meters), t * 255, 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


@torch.no_grad()
def save_prediction_samples(model: torch.nn.Module, val_split, config, path: Path, count: int = 4) -> Path:
    from runner.tasks.mtl.data.batches import denormalise_depth, val_batches
    from runner.tasks.mtl.data.miniscapes import RGB_MEAN, RGB_STD

    model.eval()
    device = next(model.parameters()).device
    batch = next(iter(val_batches(val_split, batch_size=count, device=device, depth_unit=config.depth_unit)))
    outputs = model(batch.image)
    seg = outputs["semseg"][-1].argmax(1).cpu().numpy().astype(np.uint8)
    depth = denormalise_depth(outputs["depth"][-1].float(), config.depth_unit)[:, 0].cpu().numpy()
    mean = torch.tensor(RGB_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STD, device=device).view(1, 3, 1, 1)
    rgb = (batch.image * std + mean).clamp(0, 255).permute(0, 2, 3, 1).byte().cpu().numpy()
    rows = [np.concatenate([rgb[i], colourise_semseg(batch.semseg[i].cpu().numpy().astype(np.uint8)),
                            colourise_semseg(seg[i]), colourise_depth(batch.depth_meters[i, 0].cpu().numpy()),
                            colourise_depth(depth[i])], axis=1) for i in range(len(rgb))]
    image = Image.fromarray(np.concatenate(rows, axis=0))
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes_atomic(path, buffer.getvalue())
