"""Speed and memory of NNrelief conv scoring.

1. relief_scores on VGG-16 (32x32), 1,000 calibration samples, conv_score="paper":
   seconds (target <= 60 s on 2 cores) and peak RSS (target < 4 GiB). The forward pass alone
   is timed for comparison.
2. conv_score="reference" against a loop over filters and output positions computing the
   same formula (the structure of the released code) on VGG-11 with 24 samples (>= 50x).

Usage: .venv/bin/python tools/bench_scoring.py [--samples 1000] [--batch 100]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn

from relief_export import models
from relief_export.prune import relief_scores


def loop_reference_scores(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """c_ij = || |K_ij| (*) mean_n |x_ni| ||_F with a Python loop over every filter and output
    position, averaging each input patch over the samples inside the loop (the structure of
    the released NNrelief code)."""
    inputs: dict[str, torch.Tensor] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=n: inputs.__setitem__(name, args[0].detach().clone()))
        for n, m in convs.items()]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    scores = {}
    for name, conv in convs.items():
        kernel = conv.weight.detach()
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        padded = F.pad(inputs[name], (p, p, p, p))
        out_h = (padded.shape[2] - k) // s + 1
        out_w = (padded.shape[3] - k) // s + 1
        result = torch.zeros(kernel.shape[0], kernel.shape[1])
        for j in range(kernel.shape[0]):
            maps = torch.zeros(kernel.shape[1], out_h, out_w)
            for row in range(out_h):
                for col in range(out_w):
                    patch = padded[:, :, row * s:row * s + k, col * s:col * s + k]
                    maps[:, row, col] = (patch.abs().mean(0) * kernel[j]).abs().sum((1, 2))
            result[j] = maps.flatten(1).norm(dim=1)
        scores[name] = result
    return scores


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    vgg16 = models.build("vgg16").eval()
    inputs = torch.rand(args.samples, 3, 32, 32)
    batches = list(inputs.split(args.batch))
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            vgg16(batch)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    scores = relief_scores(vgg16, batches, conv_score="paper")
    paper = time.perf_counter() - start
    convs = sum(1 for name in scores if name.startswith("features"))
    print(f"VGG-16, {args.samples} samples, {convs} conv layers, conv_score=paper: "
          f"{paper:.1f} s (forward pass alone {forward:.1f} s), peak RSS {peak_rss_gib():.2f} GiB")

    vgg11 = models.build("vgg11").eval()
    small = torch.rand(24, 3, 32, 32)
    start = time.perf_counter()
    ours = relief_scores(vgg11, small, conv_score="reference")
    fast = time.perf_counter() - start
    start = time.perf_counter()
    looped = loop_reference_scores(vgg11, small)
    slow = time.perf_counter() - start
    worst = max(float((ours[n][:, :-1] - looped[n]).abs().max() / looped[n].abs().max())
                for n in looped)
    print(f"VGG-11, 24 samples, conv_score=reference: {fast:.3f} s vs filter x position loop "
          f"{slow:.2f} s: {slow / fast:.0f}x faster (max relative difference {worst:.1e})")


if __name__ == "__main__":
    main()
