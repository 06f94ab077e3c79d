"""Multi-task architectures: how encoder, heads, decoders and predictors are wired (report 1-4).

Each model takes already-built parts (see :mod:`models.factory`) so the wiring is all that lives
here. ``forward(x)`` returns ``{"semseg": [B x C x H x W, ...], "depth": [B x 1 x H x W, ...]}``:
lists for deep supervision, the last element being the final prediction, every prediction
upsampled bilinearly to the input size. Predictions come from 1x1 convs with bias
("predictors") on a decoder's final features.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from models.attention import SelfAttention, SqueezeAndExcitation
from models.encoder import EncoderFeatures, ResNetEncoder
from models.layers import resize_to

SEMSEG, DEPTH = "semseg", "depth"


def _predictor(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)


class _MultiTaskModel(nn.Module):
    """Shared encoder + optional squeeze-and-excitation on its bottleneck."""

    def __init__(self, encoder: ResNetEncoder, bottleneck_se: Optional[nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.bottleneck_se = bottleneck_se

    def encode(self, x: torch.Tensor) -> EncoderFeatures:
        features = self.encoder(x)
        if self.bottleneck_se is not None:
            features = features._replace(bottleneck=self.bottleneck_se(features.bottleneck))
        return features


class JointModel(_MultiTaskModel):
    """Report 1: everything shared; one predictor with num_classes + 1 channels, then split."""

    def __init__(self, encoder: ResNetEncoder, head: nn.Module, decoder: nn.Module,
                 num_classes: int, bottleneck_se: Optional[nn.Module] = None):
        super().__init__(encoder, bottleneck_se)
        self.head, self.decoder = head, decoder
        self.predictor = _predictor(decoder.out_channels, num_classes + 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        features = self.encode(x)
        out = resize_to(self.predictor(self.decoder(self.head(features.bottleneck), features)),
                        x.shape[-2:])
        return {SEMSEG: [out[:, :self.num_classes]], DEPTH: [out[:, self.num_classes:]]}


class BranchedModel(_MultiTaskModel):
    """Report 2: shared encoder; per-task head, decoder and predictor."""

    def __init__(self, encoder: ResNetEncoder, head_seg: nn.Module, head_depth: nn.Module,
                 decoder_seg: nn.Module, decoder_depth: nn.Module, num_classes: int,
                 bottleneck_se: Optional[nn.Module] = None):
        super().__init__(encoder, bottleneck_se)
        self.head_seg, self.head_depth = head_seg, head_depth
        self.decoder_seg, self.decoder_depth = decoder_seg, decoder_depth
        self.predictor_seg = _predictor(decoder_seg.out_channels, num_classes)
        self.predictor_depth = _predictor(decoder_depth.out_channels, 1)

    def first_stage(self, features: EncoderFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's final decoder features (before its predictor)."""
        seg = self.decoder_seg(self.head_seg(features.bottleneck), features)
        depth = self.decoder_depth(self.head_depth(features.bottleneck), features)
        return seg, depth

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        seg, depth = self.first_stage(self.encode(x))
        size = x.shape[-2:]
        return {SEMSEG: [resize_to(self.predictor_seg(seg), size)],
                DEPTH: [resize_to(self.predictor_depth(depth), size)]}


class DistillationModel(BranchedModel):
    """Report 3 / 4.4: a branched first stage, then a second decoder per task fed across tasks.

    ``squeeze_excite=False`` (report 3): input_seg_2 = seg_1 + SA_depth(depth_1) and
    input_depth_2 = depth_1 + SA_seg(seg_1), SA = SelfAttention(F, F).
    ``squeeze_excite=True`` (report 4.4): sa_t = SA_t(concat(seg_1, depth_1)) with
    SelfAttention(2F, F); input_t_2 = relu(t_1 + SE_t(sa_t) + sa_t).
    Both stages' predictions are returned (deep supervision), the second one last.
    """

    def __init__(self, encoder: ResNetEncoder, head_seg: nn.Module, head_depth: nn.Module,
                 decoder_seg: nn.Module, decoder_depth: nn.Module, decoder_seg_2: nn.Module,
                 decoder_depth_2: nn.Module, num_classes: int, squeeze_excite: bool = False,
                 bottleneck_se: Optional[nn.Module] = None):
        super().__init__(encoder, head_seg, head_depth, decoder_seg, decoder_depth, num_classes,
                         bottleneck_se)
        if decoder_seg.out_channels != decoder_depth.out_channels:
            raise ValueError("distillation needs both first-stage decoders to have the same "
                             "number of output channels")
        channels = decoder_seg.out_channels
        sa_in = 2 * channels if squeeze_excite else channels
        self.sa_seg = SelfAttention(sa_in, channels)
        self.sa_depth = SelfAttention(sa_in, channels)
        self.squeeze_excite = squeeze_excite
        if squeeze_excite:
            self.se_seg = SqueezeAndExcitation(channels)
            self.se_depth = SqueezeAndExcitation(channels)
        self.decoder_seg_2, self.decoder_depth_2 = decoder_seg_2, decoder_depth_2
        self.predictor_seg_2 = _predictor(decoder_seg_2.out_channels, num_classes)
        self.predictor_depth_2 = _predictor(decoder_depth_2.out_channels, 1)

    def distill(self, seg: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The second decoders' inputs, each task's features enriched by the other task's."""
        if not self.squeeze_excite:
            return seg + self.sa_depth(depth), depth + self.sa_seg(seg)
        both = torch.cat((seg, depth), dim=1)
        sa_seg, sa_depth = self.sa_seg(both), self.sa_depth(both)
        return (torch.relu(seg + self.se_seg(sa_seg) + sa_seg),
                torch.relu(depth + self.se_depth(sa_depth) + sa_depth))

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        features = self.encode(x)
        seg_1, depth_1 = self.first_stage(features)
        input_seg_2, input_depth_2 = self.distill(seg_1, depth_1)
        seg_2 = self.decoder_seg_2(input_seg_2, features)
        depth_2 = self.decoder_depth_2(input_depth_2, features)
        size = x.shape[-2:]
        return {
            SEMSEG: [resize_to(self.predictor_seg(seg_1), size),
                     resize_to(self.predictor_seg_2(seg_2), size)],
            DEPTH: [resize_to(self.predictor_depth(depth_1), size),
                    resize_to(self.predictor_depth_2(depth_2), size)],
        }
