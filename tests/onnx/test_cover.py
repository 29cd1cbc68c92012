"""Covers of a connection mask by dense blocks: exact, and as cheap as the structure allows."""

import numpy as np
import pytest

from relief_export.onnx.sparse.cover import (
    BLOCK_OVERHEAD,
    Block,
    Cover,
    coarser_covers,
    find_cover,
    one_block,
)


def covers_exactly(mask: np.ndarray, cover: Cover) -> bool:
    """Every unit in exactly one block; every connection inside its unit's block."""
    rows = sorted(r for b in cover.blocks for r in b.rows)
    if rows != list(range(mask.shape[0])):
        return False
    inside = np.zeros_like(mask)
    for block in cover.blocks:
        inside[np.ix_(block.rows, block.cols)] = True
    return bool(np.all(inside[mask]))


def hidden_blocks(units: int, inputs: int, groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    unit_groups = rng.permutation(np.arange(units) % groups)
    input_groups = rng.permutation(np.arange(inputs) % groups)
    return unit_groups[:, None] == input_groups[None, :], unit_groups


@pytest.mark.parametrize(("units", "inputs", "groups"), [(64, 64, 8), (96, 48, 4), (40, 200, 5)])
def test_block_diagonal_masks_under_any_order_are_found(units, inputs, groups):
    mask, unit_groups = hidden_blocks(units, inputs, groups, seed=units)
    cover = find_cover(mask)
    assert covers_exactly(mask, cover)
    assert len(cover.blocks) == groups
    # each block is one hidden group: (units / g) x (inputs / g), by hand
    assert cover.macs == groups * (units // groups) * (inputs // groups) == int(mask.sum())
    for block in cover.blocks:
        assert len(set(unit_groups[list(block.rows)])) == 1


def test_a_dense_mask_stays_one_block():
    mask = np.ones((16, 12), dtype=bool)
    cover = find_cover(mask)
    assert [(len(b.rows), len(b.cols)) for b in cover.blocks] == [(16, 12)]
    assert cover.fraction == 1.0 and cover.cost == pytest.approx(1.0 + BLOCK_OVERHEAD)


def test_random_masks_are_covered_exactly():
    rng = np.random.default_rng(3)
    for density in (0.05, 0.15, 0.5):
        mask = rng.random((48, 40)) < density
        cover = find_cover(mask)
        assert covers_exactly(mask, cover)
        assert cover.cost <= 1.0 + BLOCK_OVERHEAD  # never worse than one block of all


def test_units_that_read_nothing_and_unread_inputs():
    mask = np.zeros((6, 5), dtype=bool)
    mask[0, 1] = mask[1, 1] = mask[4, 3] = True  # units 2, 3, 5 read nothing; 0, 2, 4 unread
    cover = find_cover(mask)
    assert covers_exactly(mask, cover)
    assert sorted(c for b in cover.blocks for c in b.cols) == [1, 3]
    assert cover.macs == 5 * 1 + 1 * 1  # idle units join the first block: (0, 1, 2, 3, 5) x 1
    assert find_cover(np.zeros((3, 4), dtype=bool)).blocks == (Block((0, 1, 2), (0,)),)


def test_cost_and_order_by_hand():
    cover = Cover((Block((2, 3), (0, 1)), Block((0, 1), (2,))), (4, 3))
    assert cover.macs == 2 * 2 + 2 * 1
    assert cover.fraction == pytest.approx(6 / 12)
    assert cover.cost == pytest.approx(0.5 + 2 * BLOCK_OVERHEAD)
    assert cover.output_order == (2, 3, 0, 1)


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="2-d mask"):
        find_cover(np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="2-d mask"):
        find_cover(np.ones((0, 3), dtype=bool))


def test_coarser_covers_by_hand():
    """8 diagonal blocks of 4 units x 3 channels (96 MACs): merged to 4 blocks of 8 x 6
    (4 x 48 = 192 MACs), then 2 of 16 x 12 (2 x 192 = 384); a merged block lists its parts'
    units part by part."""
    mask = np.kron(np.eye(8, dtype=bool), np.ones((4, 3), dtype=bool))
    finest = find_cover(mask)
    assert len(finest.blocks) == 8 and finest.macs == 96
    coarser = coarser_covers(finest)
    assert [(len(c.blocks), c.macs) for c in coarser] == [(4, 192), (2, 384)]
    for cover in coarser:
        assert covers_exactly(mask, cover)
        assert all(len(b.rows) == 32 // len(cover.blocks) for b in cover.blocks)
    parts = {b.rows for b in finest.blocks}
    for block in coarser[0].blocks:
        assert (block.rows[:4] in parts) and (block.rows[4:] in parts)


def test_coarser_covers_merge_the_cheapest_pair_first():
    """Blocks A (2 x {0, 1}), B (2 x {1, 2}) and C (2 x {5}): merging A and B adds
    4 x 3 - 4 - 4 = 4 MACs, A and C 4 x 3 - 4 - 2 = 6, B and C 6: A and B merge."""
    cover = Cover((Block((0, 1), (0, 1)), Block((2, 3), (1, 2)), Block((4, 5), (5,))), (6, 6))
    [two] = coarser_covers(cover)
    assert two.blocks == (Block((0, 1, 2, 3), (0, 1, 2)), Block((4, 5), (5,)))
    assert two.macs == 4 * 3 + 2 * 1
    assert coarser_covers(Cover(two.blocks, (6, 6))) == []


def test_one_block_reads_only_what_some_unit_reads():
    mask = np.zeros((3, 6), dtype=bool)
    mask[0, 1] = mask[1, 4] = mask[2, 1] = True  # inputs 0, 2, 3, 5 unread
    [block] = one_block(mask).blocks
    assert block == Block((0, 1, 2), (1, 4))
    assert one_block(mask).macs == 3 * 2 and one_block(mask).output_order == (0, 1, 2)
