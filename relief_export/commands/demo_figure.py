"""LeNet-300-100 before and after pruning, connections coloured by importance (the idea of
the NNrelief paper's Figure 2).

Per row (dense, pruned): the input pixels' importance as a 28 x 28 map (a pixel's total
contribution to the first layer), and the 300-100-10 part of the network as columns of
neurons whose connections are drawn with colour and opacity set by their share of the
receiving neuron's total incoming signal, c_ij / S_j (NNrelief's score). Pruned connections
and units are not drawn; removed neurons are hollow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..figures import png_bytes, pyplot
from ..files import write_file
from ..prune import relief_scores


def draw_lenet300(models: dict[str, nn.Module], calibration: torch.Tensor,
                  path: str | Path) -> None:
    from matplotlib.collections import LineCollection

    plt = pyplot()

    figure, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)),
                                gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
    for row, (title, model) in enumerate(models.items()):
        scores = relief_scores(model, calibration)
        names = list(scores)
        pixels = scores[names[0]][:, :-1].sum(0).reshape(28, 28).numpy()
        image = axes[row][0].imshow(pixels, cmap="magma")
        axes[row][0].set_title(f"{title}: input pixel importance")
        axes[row][0].axis("off")
        figure.colorbar(image, ax=axes[row][0], fraction=0.046, pad=0.04,
                        label="sum of the pixel's scores c_ij")
        graph = axes[row][1]
        widths = [scores[names[1]].shape[1] - 1, scores[names[1]].shape[0],
                  scores[names[2]].shape[0]]
        positions = [np.linspace(0, 1, w) for w in widths]
        for layer, name in enumerate(names[1:3]):
            share = _shares(scores[name])
            targets, sources = np.nonzero(share)
            if len(targets):
                segments = np.stack([
                    np.stack([np.full(len(sources), layer), positions[layer][sources]], 1),
                    np.stack([np.full(len(targets), layer + 1), positions[layer + 1][targets]],
                             1)], 1)
                weights = share[targets, sources]
                colours = plt.cm.viridis(weights / weights.max())
                colours[:, 3] = np.clip(weights / weights.max(), 0.03, 1.0)
                graph.add_collection(LineCollection(list(segments), colors=colours,
                                                    linewidths=0.4))
        for column, (width, pos) in enumerate(zip(widths, positions, strict=True)):
            alive = _alive(scores, names, column)
            graph.scatter(np.full(width, column)[alive], pos[alive], s=6, color="black",
                          zorder=3)
            graph.scatter(np.full(width, column)[~alive], pos[~alive], s=6,
                          facecolors="none", edgecolors="lightgray", zorder=3)
        kept = sum(int(torch.count_nonzero(m.weight)) for m in model.modules()
                   if isinstance(m, nn.Linear))
        graph.set_title(f"{title}: 300-100-10 connections by share of incoming signal "
                        f"({kept:,} nonzero weights in all layers, biases not counted)")
        figure.colorbar(plt.cm.ScalarMappable(cmap="viridis"), ax=graph, fraction=0.03,
                        pad=0.01, label="c_ij / S_j, relative to the layer's largest")
        graph.set_xticks([0, 1, 2], ["hidden 300", "hidden 100", "output 10"])
        graph.set_yticks([])
        graph.set_xlim(-0.1, 2.1)
    figure.tight_layout()
    write_file(path, png_bytes(figure))


def _shares(scores: torch.Tensor) -> np.ndarray:
    """c_ij / S_j without the bias column."""
    totals = scores.sum(1, keepdim=True).clamp_min(1e-12)
    return (scores[:, :-1] / totals).numpy()


def _alive(scores: dict[str, torch.Tensor], names: list[str], column: int) -> np.ndarray:
    """Neurons with any incoming connection (column 0: units of the first layer)."""
    incoming = scores[names[column]][:, :-1]
    return (incoming.sum(1) > 0).numpy()
