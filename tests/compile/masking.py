"""Random masks that kill whole units (with or without their bias) and random connections."""

import torch
from torch import nn


def random_masks(model: nn.Module, seed: int, unit_rate: float = 0.3,
                 connection_rate: float = 0.5) -> None:
    """Zero weights in place; BatchNorm statistics and affine terms get random values so that
    dead units emit nonzero constants; CIFAR ResNet gates close at random."""
    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for index, layer in enumerate(layers):
            out = layer.weight.shape[0]
            last = index == len(layers) - 1
            dead = torch.rand(out, generator=generator) < (0 if last else unit_rate)
            layer.weight[dead] = 0
            if layer.bias is not None:
                keep_bias = torch.rand(out, generator=generator) < 0.5
                layer.bias[dead & ~keep_bias] = 0
            cut = torch.rand(layer.weight.shape[:2], generator=generator) < connection_rate
            layer.weight[cut] = 0
            if layer.weight.shape[1] > 1:
                unread = torch.rand(layer.weight.shape[1], generator=generator) < unit_rate
                layer.weight[:, unread] = 0
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(size, generator=generator))
                module.bias.copy_(torch.randn(size, generator=generator) * 0.5)
            gate = getattr(module, "shortcut_gate", None)
            if isinstance(gate, torch.Tensor):
                gate.copy_((torch.rand(gate.shape, generator=generator) > 0.3).float())
