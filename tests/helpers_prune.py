"""A factory for the state_dict case of tests/test_prune_inputs.py."""

from torch import nn


def mlp6() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
