"""The artifact detector's trainable network (torch + timm), kept apart from artifact.py so that
scoring never imports them: importing torch and timm costs several seconds of CPU, more than
scoring a clip. Inference runs `artifact.NumpyPatchNet` on the same state dict."""

from __future__ import annotations

import torch
from torch import nn


class PatchNet(nn.Module):
    """timm ResNet backbone adapted to 32x32 patches + a linear head: column 0 is the
    real/synthetic logit, columns 1.. the attribution logits."""

    def __init__(self, spec: dict, n_classes: int = 0):
        super().__init__()
        from timm.models.resnet import BasicBlock, ResNet

        self.body = ResNet(BasicBlock, list(spec["layers"]), num_classes=0, global_pool="",
                           channels=tuple(spec["channels"]), stem_type=spec["stem_type"],
                           stem_width=spec["stem_width"])
        first = self.body.conv1[0] if isinstance(self.body.conv1, nn.Sequential) else self.body.conv1
        first.stride = (spec["stem_stride"],) * 2
        if not spec.get("stem_pool", True):
            self.body.maxpool = nn.Identity()
        self.head = nn.Linear(spec["channels"][-1], 1 + n_classes)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))

    def forward(self, x_u8: torch.Tensor) -> torch.Tensor:
        """(B, 32, 32, 3) uint8 → (B, 1 + classes) logits."""
        x = x_u8.permute(0, 3, 1, 2).float().div(255)                     # (B, 3, 32, 32)
        f = self.body.forward_features((x - self.mean) / self.std)         # (B, C, 2, 2)
        return self.head(f.mean((2, 3)))                                   # (B, 1 + K)

    @torch.no_grad()
    def outputs(self, patches) -> "object":
        """numpy (N, 32, 32, 3) uint8 → numpy (N, 1 + classes) float32 (the NumpyPatchNet API)."""
        self.eval()
        return self(torch.from_numpy(patches)).numpy()
