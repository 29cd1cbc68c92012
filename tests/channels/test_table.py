"""The channel table: one rule per key, registered by the family modules, found by type."""

import pytest
import torch
from torch import fx, nn

import relief_export as rx
from relief_export.channels import table


def test_a_key_taught_twice_is_an_error(monkeypatch):
    monkeypatch.setattr(table, "FUNCTIONS", {})

    @table.rule(functions=[torch.flip])
    def first(b, node):
        return None

    with pytest.raises(ValueError, match="two channel rules: first and second"):
        @table.rule(functions=[torch.flip])
        def second(b, node):
            return None


def test_every_rule_lives_in_a_family_module():
    rules = [*table.FUNCTIONS.values(), *table.METHODS.values(), *table.MODULES.values()]
    families = {r.apply.__module__.rsplit(".", 1)[-1] for r in rules}
    assert families == {"attention", "kept_whole", "movement", "per_channel", "slicing",
                        "spatial", "two_value"}
    assert table.FUNCTIONS[torch.flip].name == "flip"
    assert table.METHODS["flip"].name == "flip"
    assert {r.name for r in rules if r.heads} == {"identity", "elementwise", "transpose",
                                                  "permute", "reshape", "attention", "matmul"}


class LeakyGate(nn.LeakyReLU):
    """A user subclass of a known module type."""


def test_a_module_subclass_finds_its_parent_rule():
    class KeepsGates(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, LeakyGate) or super().is_leaf_module(m, name)

    module = nn.Sequential(nn.Linear(4, 4), LeakyGate())
    graph = fx.GraphModule(module, KeepsGates().trace(module))
    node = next(n for n in graph.graph.nodes if n.op == "call_module" and n.target == "1")
    found = table.lookup(node, dict(graph.named_modules()))
    assert found is not None and found.name == "elementwise"


def test_arguments_a_rule_does_not_cover_are_named():
    class ChannelFlip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(torch.flip(self.conv(x), [1]))

    _, report = rx.compact_with_report(ChannelFlip().eval(), torch.randn(2, 3, 4, 4))
    assert report.to_dict()["left_whole"] == [{"node": "flip", "op": "call_function flip",
                                               "why": "arguments the flip rule does not "
                                                      "cover"}]
