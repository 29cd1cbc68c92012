"""Dense blocks that cover a layer's connections, under any order of its units and inputs.

The mask M (O x I, True where output unit o reads input channel i through a nonzero weight or
kernel slice) is split into row groups R_1..R_k; block g computes the units R_g from the
inputs C_g = {i : M[o, i] for some o in R_g} (its support), so every connection is computed
exactly once: sum_g |R_g| |C_g| multiply-adds per position (and kernel tap) instead of O I.

Row groups come from two searches, whichever costs less:
- the connected components of the bipartite graph units <-> inputs (exact blocks, however the
  units and channels are ordered, when the mask is block-diagonal under some permutation);
- spectral co-clustering (Dhillon 2001, with k - 1 singular vectors: the vectors 2..k of
  D_r^-1/2 M D_c^-1/2 embed units and inputs, k-means groups them) for k = 2, 4, 8, 16,
  refined by moving each unit to the group where it adds the fewest multiply-adds.
  Dhillon's log2(k) vectors lose exact block structure with k >= 8 (the leading singular
  value then repeats k times); tools/bench_cover.py measures the searches on masks of known
  structure.
Cost of a cover: its multiply-adds plus ``BLOCK_OVERHEAD`` per block, in units of O I (a
block's Gather, launch and Concat); the cost model in ``timing.py`` then measures the best
cover against the dense layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

BLOCK_OVERHEAD = 0.02  # of the dense layer's multiply-adds, per block
GROUP_COUNTS = (2, 4, 8, 16)
REFINE_ROUNDS = 4


@dataclass(frozen=True)
class Block:
    """Units ``rows`` computed from input channels ``cols`` (indices in the layer's order)."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]


@dataclass(frozen=True)
class Cover:
    blocks: tuple[Block, ...]
    shape: tuple[int, int]  # (O, I)

    @property
    def macs(self) -> int:
        """Multiply-adds per position and kernel tap: sum |R_g| |C_g|."""
        return sum(len(b.rows) * len(b.cols) for b in self.blocks)

    @property
    def fraction(self) -> float:
        """macs / (O I)."""
        return self.macs / max(self.shape[0] * self.shape[1], 1)

    @property
    def cost(self) -> float:
        return self.fraction + BLOCK_OVERHEAD * len(self.blocks)

    @property
    def output_order(self) -> tuple[int, ...]:
        """The units in the order the blocks' outputs are concatenated."""
        return tuple(o for b in self.blocks for o in b.rows)


def find_cover(mask: np.ndarray, max_blocks: int = 16, seed: int = 0) -> Cover:
    """The cheapest cover found of ``mask`` (O x I bool) with at most ``max_blocks`` blocks;
    one block of everything read when nothing is cheaper."""
    candidates = candidate_covers(mask, max_blocks, seed)
    return min(candidates.values(), key=lambda c: (c.cost, len(c.blocks)))


def one_block(mask: np.ndarray) -> Cover:
    """Every unit, in order, from the inputs any unit reads: cheaper than the layer when some
    inputs are read by none (a network input's unread features, which compaction cannot
    remove)."""
    return _cover(np.asarray(mask, dtype=bool), np.zeros(mask.shape[0], dtype=np.int64))


def coarser_covers(cover: Cover) -> list[Cover]:
    """Coarser covers from ``cover``: its blocks merged pairwise (the pair whose union adds
    the fewest multiply-adds first) to ceil(k / 2), ceil(k / 4), ... blocks, down to 2. A
    merged block lists its parts' units part by part, so a later layer that read the parts
    as channel ranges still does. Fewer, larger blocks do more multiply-adds but can run
    faster (small blocks use the vector units poorly, int8 ones most)."""
    blocks = list(cover.blocks)
    coarser = []
    count = (len(blocks) + 1) // 2
    while len(blocks) > 2:
        while len(blocks) > count:
            _, a, b = min((_added(blocks[a], blocks[b]), a, b)
                          for a in range(len(blocks)) for b in range(a + 1, len(blocks)))
            blocks[a] = Block(blocks[a].rows + blocks[b].rows,
                              tuple(sorted({*blocks[a].cols, *blocks[b].cols})))
            del blocks[b]
        coarser.append(Cover(tuple(blocks), cover.shape))
        count = (count + 1) // 2
    return coarser


def ranged(cover: Cover) -> Cover | None:
    """``cover`` with each block reading every channel from its first to its last: a Slice
    instead of a Gather (onnxruntime gathers off axis 0 element by element), at the cost of
    the multiply-adds by the zero weights of the channels between that it does not read.
    None when every block reads a range already."""
    blocks = tuple(Block(b.rows, tuple(range(b.cols[0], b.cols[-1] + 1)))
                   for b in cover.blocks)
    return None if blocks == cover.blocks else Cover(blocks, cover.shape)


def gathers(cover: Cover) -> bool:
    """Some block of a cover of two or more blocks reads channels that are not a range."""
    return len(cover.blocks) > 1 and \
        any(b.cols != tuple(range(b.cols[0], b.cols[-1] + 1)) for b in cover.blocks)


def grouping_order(cover: Cover) -> tuple[int, ...]:
    """The input channels block by block (each at its first block), then those none reads:
    under this order, blocks that read disjoint channels read ranges."""
    order = dict.fromkeys(c for b in cover.blocks for c in b.cols)
    return tuple(order) + tuple(c for c in range(cover.shape[1]) if c not in order)


def in_channel_order(cover: Cover, order: tuple[int, ...]) -> Cover:
    """``cover`` once the channels are reordered (new channel j is old channel order[j])."""
    position = {old: new for new, old in enumerate(order)}
    return Cover(tuple(Block(b.rows, tuple(sorted(position[c] for c in b.cols)))
                       for b in cover.blocks), cover.shape)


def _added(a: Block, b: Block) -> int:
    """The multiply-adds merging blocks ``a`` and ``b`` adds: |R_a u R_b| |C_a u C_b| -
    |R_a| |C_a| - |R_b| |C_b|."""
    union = len({*a.cols, *b.cols})
    return (len(a.rows) + len(b.rows)) * union - len(a.rows) * len(a.cols) - \
        len(b.rows) * len(b.cols)


def candidate_covers(mask: np.ndarray, max_blocks: int = 16, seed: int = 0
                     ) -> dict[str, Cover]:
    """Every search's cover by name: "one block", "components", "spectral k=K"."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.size:
        raise ValueError(f"a cover needs a 2-d mask with entries, got shape {mask.shape}")
    candidates = {"one block": _cover(mask, np.zeros(mask.shape[0], dtype=np.int64))}
    components = _components(mask)
    if components.max() > 0:
        candidates["components"] = _cover(mask, _merged(mask, components, max_blocks))
    rng = np.random.default_rng(seed)
    for k in GROUP_COUNTS:
        if k > max_blocks or k > mask.shape[0]:
            break
        labels = _spectral_rows(mask, k, rng)
        if labels is not None:
            candidates[f"spectral k={k}"] = _cover(mask, _refined(mask, labels))
    return candidates


def _cover(mask: np.ndarray, labels: np.ndarray) -> Cover:
    """Blocks of the row groups ``labels`` (empty groups dropped; units that read nothing
    join the first block, as they need no input)."""
    used = mask.any(1)
    groups = [np.flatnonzero((labels == g) & used) for g in np.unique(labels[used])] \
        if used.any() else [np.arange(0)]
    idle = np.flatnonzero(~used)
    if idle.size:
        groups[0] = np.sort(np.concatenate([groups[0], idle]))
    blocks = []
    for rows in groups:
        cols = np.flatnonzero(mask[rows].any(0))
        if not cols.size:  # a layer that reads nothing: one input keeps the block a layer
            cols = np.arange(1)
        blocks.append(Block(tuple(int(r) for r in rows), tuple(int(c) for c in cols)))
    return Cover(tuple(blocks), (int(mask.shape[0]), int(mask.shape[1])))


def _components(mask: np.ndarray) -> np.ndarray:
    """Per unit, its connected component in the bipartite graph units <-> inputs."""
    rows, cols = np.nonzero(mask)
    count = mask.shape[0] + mask.shape[1]
    graph = coo_matrix((np.ones(rows.size), (rows, cols + mask.shape[0])),
                       shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    unit_labels = labels[:mask.shape[0]]
    return np.unique(unit_labels, return_inverse=True)[1]


def _merged(mask: np.ndarray, labels: np.ndarray, max_blocks: int) -> np.ndarray:
    """Merge the pair of groups whose union adds the fewest multiply-adds until at most
    ``max_blocks`` remain."""
    groups = {int(g): set(np.flatnonzero(labels == g).tolist()) for g in np.unique(labels)}
    support = {g: mask[sorted(rows)].any(0) for g, rows in groups.items()}
    while len(groups) > max_blocks:
        keys = sorted(groups)
        best = None
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                union = int((support[a] | support[b]).sum())
                added = (len(groups[a]) + len(groups[b])) * union - \
                    len(groups[a]) * int(support[a].sum()) - len(groups[b]) * int(support[b].sum())
                if best is None or added < best[0]:
                    best = (added, a, b)
        assert best is not None
        _, a, b = best
        groups[a] |= groups.pop(b)
        support[a] = support[a] | support.pop(b)
    merged = np.zeros(mask.shape[0], dtype=np.int64)
    for label, rows in enumerate(groups.values()):
        merged[sorted(rows)] = label
    return merged


def _spectral_rows(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """Row labels of a spectral co-clustering into ``k`` groups, or None if degenerate."""
    used_rows, used_cols = mask.any(1), mask.any(0)
    sub = mask[used_rows][:, used_cols].astype(np.float64)
    if min(sub.shape) <= k:
        return None
    d_rows, d_cols = 1 / np.sqrt(sub.sum(1)), 1 / np.sqrt(sub.sum(0))
    normalised = d_rows[:, None] * sub * d_cols[None, :]
    vectors = k
    u, _, vt = np.linalg.svd(normalised, full_matrices=False)
    if u.shape[1] < vectors:
        return None
    z_rows = d_rows[:, None] * u[:, 1:vectors]
    z_cols = d_cols[:, None] * vt[1:vectors].T
    points = np.vstack([z_rows, z_cols])
    scale = points.std(0)
    points = points / np.where(scale > 0, scale, 1)
    _, labels = kmeans2(points, k, minit="++", seed=rng, missing="raise") \
        if _enough_distinct(points, k) else (None, None)
    if labels is None:
        return None
    rows = np.zeros(mask.shape[0], dtype=np.int64)
    rows[used_rows] = labels[:z_rows.shape[0]]
    return rows


def _enough_distinct(points: np.ndarray, k: int) -> bool:
    return np.unique(points.round(9), axis=0).shape[0] >= k


def _refined(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Move each unit to the group where it adds the fewest multiply-adds, a few rounds:
    adding unit o to group g costs |C_g u S_o| (|R_g| + 1) - |C_g| |R_g|."""
    groups, labels = np.unique(labels, return_inverse=True)
    row_mask = mask.astype(np.int64)
    counts = np.stack([row_mask[labels == g].sum(0) for g in range(groups.size)])
    sizes = np.bincount(labels, minlength=groups.size)
    for _ in range(REFINE_ROUNDS):
        moved = False
        for o in np.flatnonzero(mask.any(1)):
            counts[labels[o]] -= row_mask[o]
            sizes[labels[o]] -= 1
            support = counts > 0
            costs = (support | mask[o]).sum(1) * (sizes + 1) - support.sum(1) * sizes
            best = int(np.argmin(costs))
            moved |= best != labels[o]
            labels[o] = best
            counts[best] += row_mask[o]
            sizes[best] += 1
        if not moved:
            break
    return labels
