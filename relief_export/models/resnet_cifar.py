"""ResNet-20/32/44/56/110 for CIFAR (He et al. 2016), option A shortcuts."""

import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option A shortcut: x[:, :, ::2, ::2] with (out - in) / 2 zero channels on each side."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.pad = (out_planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x) * shortcut_gate).

    ``shortcut_gate`` is a per-channel 0/1 buffer (all ones when dense): NNrelief's residual
    rule closes it for channels where the shortcut carries too little of the signal.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes)
        self.shortcut_gate: torch.Tensor
        self.register_buffer("shortcut_gate", torch.ones(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x) * self.shortcut_gate.view(1, -1, 1, 1))


class CifarResNet(nn.Module):
    """3x3 stem (16) -> three stages of n blocks (16, 32, 64) -> global average pool -> linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            strides = [stride] + [1] * (blocks_per_stage - 1)
            blocks = []
            for s in strides:
                blocks.append(BasicBlock(planes, width, s))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """depth = 6n + 2."""
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)
