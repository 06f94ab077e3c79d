"""Cross-task attention blocks used by the distillation architectures (report 3 and 4.4)."""
from __future__ import annotations

import torch
from torch import nn


class SelfAttention(nn.Module):
    """The course's self-attention: features * sigmoid(gate), both 3x3 convs without bias.

    The gate starts at zero weights, i.e. a uniform 0.5 mask, so at initialisation the block
    passes half of its features and the distillation starts close to the branched model.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.gate = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        nn.init.zeros_(self.gate.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class SqueezeAndExcitation(nn.Module):
    """Channel gating: mean over H,W -> Linear(C, C/r) -> ReLU -> Linear(C/r, C) -> sigmoid.

    Used on the encoder bottleneck (SE(512) = 33,312 params, the difference between the report's
    joint count and ours) and as the residual channel selector of report 4.4.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]
