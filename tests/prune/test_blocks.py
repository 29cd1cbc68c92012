"""NNrelief with blocks: connections only inside each unit's group, groups from the scores
and from the units that feed each channel."""

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from relief_export import load_model
from relief_export.errors import ReliefError
from relief_export.prune import ReliefConfig, relief_step
from relief_export.prune.blocks import _equal_mass_ranges, _unit_groups, in_group_masks
from relief_export.prune.structure import discover

from ..helpers import run_cli


def test_units_go_to_the_group_holding_their_score_mass_balanced():
    channel_groups = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[0.0, 1.0, 5.0, 0.0],   # group 1: 5 of 6
                           [1.0, 1.0, 3.0, 3.0],   # group 1: 6 of 8
                           [4.0, 4.0, 1.0, 0.0],   # group 0: 8 of 9
                           [2.0, 1.0, 0.0, 0.0]])  # group 0: 3 of 3
    assert _unit_groups(scores, channel_groups, 2).tolist() == [1, 1, 0, 0]
    # three units prefer group 0, room for two: the weakest preference (unit 1: 6/10) moves
    scores = torch.tensor([[5.0, 0.0, 1.0, 0.0], [3.0, 3.0, 2.0, 2.0], [9.0, 0.0, 0.0, 1.0],
                           [0.0, 0.0, 1.0, 1.0]])
    assert _unit_groups(scores, channel_groups, 2).tolist() == [0, 1, 0, 1]


def test_network_inputs_are_cut_into_ranges_of_equal_score_mass():
    # middles M_<i + m_i / 2 = 0.5 1.5 2.5 3.5 6 of M = 8: x 2 / 8 -> 0 0 0 0 1
    assert _equal_mass_ranges(torch.tensor([1.0, 1, 1, 1, 4]), 2).tolist() == [0, 0, 0, 0, 1]
    # middles 0 0 1.5 3.5 4 4 of 4: x 2 / 4 -> 0 0 0.75 1.75 2 2, the last group capped at 1
    assert _equal_mass_ranges(torch.tensor([0.0, 0, 3, 1, 0, 0]), 2).tolist() == \
        [0, 0, 0, 1, 1, 1]
    assert _equal_mass_ranges(torch.zeros(4), 2).tolist() == [0, 0, 1, 1]  # no mass: i B // n


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def row_groups(allowed: torch.Tensor) -> list[frozenset[int]]:
    """Units with the same allowed inputs form a group: the sets of their allowed inputs."""
    return sorted({frozenset(torch.nonzero(row[:-1]).flatten().tolist()) for row in allowed},
                  key=min)


def test_input_groups_follow_the_units_that_feed_them():
    torch.manual_seed(0)
    model = Mlp().eval()
    structure = discover(model, torch.randn(2, 16))
    ShapeProp(structure.graph_module).propagate(torch.randn(2, 16))  # as collect() leaves it
    generator = torch.Generator().manual_seed(1)
    scores = {name: torch.rand(layer.weight.shape[0], layer.weight.shape[1] + 1,
                               generator=generator, dtype=torch.float64)
              for name, layer in structure.layers.items()}
    scores["fc1"][:, :-1] /= scores["fc1"][:, :-1].sum(0)  # every input's mass 1
    allowed = in_group_masks(structure.graph_module, scores, 2)
    assert set(allowed) == {"fc1", "fc2"}  # the last layer is never grouped
    # fc1 reads the network input: contiguous ranges of equal mass, here halves
    assert row_groups(allowed["fc1"]) == [frozenset(range(8)), frozenset(range(8, 16))]
    skewed = {name: value.clone() for name, value in scores.items()}
    skewed["fc1"][:, 12:16] *= 3.0  # mass 12 x 1 + 4 x 3 = 24: the halves meet at 12
    assert row_groups(in_group_masks(structure.graph_module, skewed, 2)["fc1"]) == \
        [frozenset(range(12)), frozenset(range(12, 16))]
    # fc2's input channel c is fc1's unit c: its groups are fc1's unit groups
    fc1_units = [frozenset(torch.nonzero(allowed["fc1"][:, :-1].any(1) &
                                         allowed["fc1"][:, g * 8]).flatten().tolist())
                 for g in range(2)]
    assert sorted(row_groups(allowed["fc2"]), key=min) == sorted(fc1_units, key=min)
    for name in ("fc1", "fc2"):  # balanced: ceil(units / 2) at most per group
        counts = [int((allowed[name][:, :-1] == allowed[name][u, :-1]).all(1).sum())
                  for u in range(allowed[name].shape[0])]
        assert max(counts) <= -(-allowed[name].shape[0] // 2)
        assert allowed[name][:, -1].all()  # the bias is always in


def components(mask: np.ndarray) -> int:
    rows, cols = np.nonzero(mask)
    size = sum(mask.shape)
    graph = coo_matrix((np.ones(rows.size), (rows, cols + mask.shape[0])), shape=(size, size))
    used = np.zeros(size, dtype=bool)
    used[rows], used[cols + mask.shape[0]] = True, True
    labels = connected_components(graph, directed=False)[1]
    return len(set(labels[used].tolist()))


def test_relief_step_with_blocks_leaves_block_diagonal_layers():
    torch.manual_seed(0)
    model = Mlp().eval()
    x = torch.randn(64, 16)
    masks = relief_step(model, x, alpha_fc=0.95, blocks=2)
    for name in ("fc1.weight", "fc2.weight"):
        kept = masks[name].numpy()
        assert components(kept) >= 2, name  # no connection joins two groups
    assert components(masks["fc3.weight"].numpy()) == 1  # the head is plain NNrelief



def test_one_block_is_plain_nnrelief():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    one = relief_step(Mlp().eval(), x, blocks=1)
    torch.manual_seed(0)
    plain = relief_step(Mlp().eval(), x)
    assert one.keys() == plain.keys()
    assert all(torch.equal(one[k], plain[k]) for k in one)
    assert not one["fc1.weight"].all()  # something was pruned


@pytest.mark.parametrize("blocks", [0, 1.5, True, 2000])
def test_bad_blocks_are_refused(blocks):
    with pytest.raises(ReliefError, match="blocks must be an integer"):
        relief_step(Mlp().eval(), torch.randn(8, 16), blocks=blocks)
    with pytest.raises(ReliefError, match="blocks must be an integer"):
        ReliefConfig(blocks=blocks)


def test_cli_prune_with_blocks(tmp_path, capsys):
    dense, pruned = tmp_path / "dense.pt", tmp_path / "pruned.pt"
    spec = "synthetic:1,28,28,4"
    code, _, err = run_cli(["train", "--arch", "lenet300_100", "--data", spec, "--epochs", "1",
                            "--out", dense], capsys)
    assert code == 0, err
    code, _, err = run_cli(["prune", dense, "--data", spec, "--out", pruned, "--blocks", "4",
                            "--iterations", "1", "--epochs", "1"], capsys)
    assert code == 0, err
    model = load_model(pruned)
    for layer in (model[1], model[3]):  # 784 -> 300 -> 100: both grouped
        assert components(layer.weight.detach().ne(0).numpy()) >= 4
    code, _, err = run_cli(["prune", dense, "--data", spec, "--out", tmp_path / "bad.pt",
                            "--blocks", "0"], capsys)
    assert code == 2 and "blocks must be an integer" in err
    assert not (tmp_path / "bad.pt").exists()
