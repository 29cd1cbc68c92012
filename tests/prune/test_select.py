import pytest
import torch

from relief_export.errors import ReliefError
from relief_export.prune.select import keep_mask


def kept(scores, alpha):
    return keep_mask(torch.tensor(scores, dtype=torch.float64), alpha).tolist()


def test_golden_rows():
    scores = [[2.0, 2.0, 1.5, 0.5], [0.0, 3.0, 3.0, 0.25]]
    assert kept(scores, 0.9) == [[True, True, True, False], [False, True, True, False]]
    assert kept(scores, 0.6) == [[True, True, False, False], [False, True, True, False]]


def test_ties_keep_the_lower_index_first():
    assert kept([[1.0, 1.0, 1.0, 1.0]], 0.5) == [[True, True, False, False]]
    assert kept([[1.0, 1.0, 1.0, 1.0]], 0.51) == [[True, True, True, False]]


def test_zero_scores_are_never_kept():
    assert kept([[0.0, 5.0, 0.0]], 1.0) == [[False, True, False]]
    assert kept([[0.0, 0.0, 0.0]], 0.9) == [[False, False, False]]


def test_a_single_contributor_is_kept():
    assert kept([[0.3]], 0.01) == [[True]]
    assert kept([[0.3]], 1.0) == [[True]]


def test_alpha_one_keeps_every_positive_score():
    assert kept([[1e6, 1e-3, 2.0, 0.0]], 1.0) == [[True, True, True, False]]


def test_the_prefix_is_minimal():
    # 0.5 + 0.375 reaches alpha * S = 0.875 exactly: the 0.125 is not needed
    assert kept([[0.375, 0.125, 0.5]], 0.875) == [[True, False, True]]


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.01, float("nan")])
def test_alpha_outside_the_unit_interval(alpha):
    with pytest.raises(ReliefError, match="alpha"):
        keep_mask(torch.ones(1, 2), alpha)
