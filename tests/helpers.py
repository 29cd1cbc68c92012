"""Small models shared by the tests (also importable as a factory: ``tests.helpers:tiny_mlp``)."""

import torch
from torch import nn


def tiny_mlp(in_features: int = 8, hidden: int = 6, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def run_cli(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from relief_export.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# one zoo model per family runs in the default set; the rest of the zoo in the slow set
FAST_ZOO = ("lenet300_100", "lenet5", "vgg11", "resnet20", "resnet18")


def zoo_params() -> list:
    """Every zoo name for pytest.mark.parametrize, those outside FAST_ZOO marked slow."""
    import pytest

    from relief_export import models

    return [name if name in FAST_ZOO else pytest.param(name, marks=pytest.mark.slow)
            for name in models.names()]
