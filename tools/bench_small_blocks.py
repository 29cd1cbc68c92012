"""Why int8 covers gain less than fp32 ones: one 3 x 3 convolution of C channels at VGG-16's
spatial sizes, batch 64, 1 thread, three ways, in fp32 and in int8 (quantized by our recipe,
relief_export.onnx.quantize):

  dense    Conv C -> C
  grouped  Conv C -> C with group = G (one op, block-diagonal weight)
  blocks   G Slices, G Convs C/G -> C/G, a Concat (what sparse compute writes)

each followed by a ReLU, timed interleaved (medians). The blocks do 1/G of the dense
multiply-adds; the columns "x dense" are their time over the dense layer's.

Usage: .venv/bin/python tools/bench_small_blocks.py [--groups 8] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from relief_export.onnx.quantize import quantize
from relief_export.onnx.sparse.timing import interleaved_ms
from relief_export.table import format_table

SHAPES = ((64, 32), (128, 16), (256, 8), (512, 4))  # (channels, spatial size) of VGG-16


class Blocks(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.width = channels // groups
        self.convs = nn.ModuleList(nn.Conv2d(self.width, self.width, 3, padding=1)
                                   for _ in range(groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(conv(x[:, g * self.width:(g + 1) * self.width]))
                          for g, conv in enumerate(self.convs)], 1)


class Layer(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def forms(channels: int, groups: int) -> dict[str, nn.Module]:
    return {"dense": Layer(nn.Conv2d(channels, channels, 3, padding=1)),
            "grouped": Layer(nn.Conv2d(channels, channels, 3, padding=1, groups=groups)),
            "blocks": Blocks(channels, groups)}


def exported(module: nn.Module, shape: tuple[int, ...], folder: Path, name: str
             ) -> onnx.ModelProto:
    path = folder / f"{name}.onnx"
    torch.onnx.export(module.eval(), (torch.randn(*shape),), path, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return onnx.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        for channels, size in SHAPES:
            shape = (1, channels, size, size)
            models = {name: exported(module, shape, Path(temp), name)
                      for name, module in forms(channels, args.groups).items()}
            calibration = rng.standard_normal((8, *shape[1:])).astype(np.float32)
            feed = {"x": rng.standard_normal((64, *shape[1:])).astype(np.float32)}
            row: list[str] = [f"{channels}x{channels}x3x3 at {size}x{size}"]
            for precision in ("fp32", "int8"):
                chosen = models if precision == "fp32" else {
                    name: quantize(model, calibration) for name, model in models.items()}
                ms = dict(zip(chosen, interleaved_ms(
                    [m.SerializeToString() for m in chosen.values()], [feed] * len(chosen), 1,
                    args.rounds), strict=True))
                row += [f"{ms['dense']:.2f}", f"{ms['grouped'] / ms['dense']:.2f}x",
                        f"{ms['blocks'] / ms['dense']:.2f}x"]
            rows.append(row)
    print(format_table(["layer (batch 64)", "fp32 dense ms", "grouped x dense",
                        "blocks x dense", "int8 dense ms", "grouped x dense",
                        "blocks x dense"], rows))
    print(f"{args.groups} groups: blocks do 1/{args.groups} of the dense multiply-adds; "
          f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
