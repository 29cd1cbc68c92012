"""NNrelief contributions as pure functions on tensors (see NNRELIEF.md).

Linear, neuron j, input i:  c_ij = |w_ji| * mean_n |x_ni|;  bias c_bj = |b_j|.
Conv, filter j, input channel i (paper):  c_ij = mean_n || |K_ij| (*) |x_ni| ||_F;
bias c_bj = |b_j| * sqrt(H_out * W_out). The reference variant takes the mean over samples
before the norm. Conv scores are computed per batch and summed; callers divide by N. A Conv1d
is read as a Conv2d on maps of height 1. A transposed convolution's slice (i, j) is
|K_ij| (*)^T |x_ni|, the map input channel i adds to output channel j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Bytes moved per output element of the direct method, in multiply-add equivalents.
_MEMORY_WEIGHT = 4.0
# Largest intermediate (in float32 elements) one chunk of a batch may create: 256 MiB.
_CHUNK_ELEMENTS = 64 * 2**20


@dataclass(frozen=True)
class ConvGeometry:
    """What the layer's own convolution does to one input channel map."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, conv: torch.nn.Conv1d | torch.nn.Conv2d) -> ConvGeometry:
        """A Conv1d is read as a Conv2d over maps of height 1 (see ``as_maps``)."""
        if isinstance(conv.padding, str):
            raise ValueError(f"padding={conv.padding!r} is not supported; use explicit padding")
        flat = isinstance(conv, torch.nn.Conv1d)
        def pair(values: tuple[int, ...], height: int) -> tuple[int, int]:
            return (height, int(values[0])) if flat else (int(values[0]), int(values[1]))
        return cls(pair(conv.kernel_size, 1), pair(conv.stride, 1),
                   pair(conv.padding, 0), pair(conv.dilation, 1), conv.groups)


def as_maps(tensor: torch.Tensor) -> torch.Tensor:
    """A Conv1d's input [N, C, L] or weight [out, in, k] with a height axis of 1 added."""
    return tensor.unsqueeze(2) if tensor.dim() == 3 else tensor


@dataclass(frozen=True)
class TransposedGeometry:
    """What a (one-group) transposed convolution does to one input channel map."""

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @classmethod
    def of(cls, conv: torch.nn.ConvTranspose1d | torch.nn.ConvTranspose2d) -> TransposedGeometry:
        """A ConvTranspose1d is read as a ConvTranspose2d over maps of height 1."""
        def pair(values: tuple[int, ...], height: int) -> tuple[int, ...]:
            return (height, int(values[0])) if len(values) == 1 else tuple(values)
        return cls(pair(conv.stride, 1), pair(conv.padding, 0),  # type: ignore[arg-type]
                   pair(conv.output_padding, 0), pair(conv.dilation, 1))


def transposed_slice_norms(weight: torch.Tensor, x: torch.Tensor,
                           geometry: TransposedGeometry) -> torch.Tensor:
    """sum_n || |K_ij| (*)^T |x_ni| ||_F for a batch x [N, in, H, W] and a transposed
    convolution's weight [in, out, kh, kw]: [out, in] (float64). One grouped transposed
    convolution (groups = in) gives every (i, j) map: channel i * out + j."""
    inputs, outputs = weight.shape[:2]
    total = torch.zeros(outputs, inputs, dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, inputs * outputs * x[0, 0].numel() * 4))
    kernel = weight.detach().abs().float()
    for part in x.split(chunk):
        maps = F.conv_transpose2d(part.detach().abs().float(), kernel, None, geometry.stride,
                                  geometry.padding, geometry.output_padding, inputs,
                                  geometry.dilation)
        norms = maps.flatten(2).norm(dim=2).view(part.shape[0], inputs, outputs)
        total += norms.sum(0, dtype=torch.float64).T
    return total


def transposed_output_positions(spatial: torch.Size | tuple[int, ...], kernel: tuple[int, ...],
                                geometry: TransposedGeometry) -> int:
    """H_out * W_out = prod ((size - 1) s - 2 p + d (k - 1) + output_padding + 1)."""
    count = 1
    for size, k, s, p, op, d in zip(spatial, kernel, geometry.stride, geometry.padding,
                                    geometry.output_padding, geometry.dilation, strict=True):
        count *= (size - 1) * s - 2 * p + d * (k - 1) + op + 1
    return count


def linear_input_sum(x: torch.Tensor) -> torch.Tensor:
    """sum_n |x_ni| over every leading dimension: [in_features]."""
    return x.detach().abs().reshape(-1, x.shape[-1]).sum(0, dtype=torch.float64)


def linear_contributions(weight: torch.Tensor, bias: torch.Tensor | None,
                         mean_abs_input: torch.Tensor) -> torch.Tensor:
    """[out, in + 1]: |w_ji| * mean|x_i|, then |b_j| (0 without a bias)."""
    scores = weight.detach().abs().double() * mean_abs_input.double().unsqueeze(0)
    return torch.cat([scores, _bias_column(bias, weight.shape[0], 1.0)], dim=1)


def conv_bias_contributions(bias: torch.Tensor | None, out_channels: int,
                            output_positions: int) -> torch.Tensor:
    """[out, 1]: |b_j| * sqrt(H_out * W_out), the Frobenius norm of a constant map."""
    return _bias_column(bias, out_channels, float(output_positions) ** 0.5)


def _bias_column(bias: torch.Tensor | None, out: int, scale: float) -> torch.Tensor:
    if bias is None:
        return torch.zeros(out, 1, dtype=torch.float64)
    return bias.detach().abs().double().unsqueeze(1) * scale


def conv_slice_norms(weight: torch.Tensor, x: torch.Tensor, geometry: ConvGeometry,
                     method: str = "auto") -> torch.Tensor:
    """sum_n || |K_ij| (*) |x_ni| ||_F for a batch x: [out, in / groups] (float64).

    ``method``: "direct" (materialise each per-slice output map), "gram" (quadratic form of
    the kernel taps with the Gram matrix of |x|'s patches) or "auto" (the cheaper one).
    """
    positions = output_positions(x.shape[2:], geometry)
    if method == "auto":
        method = choose_method(weight.shape, positions, geometry.groups, x.shape[0])
    if method not in ("gram", "direct"):
        raise ValueError(f"unknown method {method!r}")
    kernel = weight.detach().abs().float().flatten(2)  # [out, in/g, k*k]
    per_sample = _elements_per_sample(weight.shape, x.shape[1], positions, geometry.groups,
                                      method)
    chunk = max(1, _CHUNK_ELEMENTS // per_sample)
    total = torch.zeros(weight.shape[0], weight.shape[1], dtype=torch.float64)
    for part in x.split(chunk):
        patches = _abs_patches(part, geometry)
        norms = (_gram_norms if method == "gram" else _direct_norms)(
            kernel, patches, geometry.groups)
        total += norms.sum(0, dtype=torch.float64)
    return total


def output_positions(spatial: torch.Size | tuple[int, ...], geometry: ConvGeometry) -> int:
    """H_out * W_out of the layer's convolution on an input of the given H, W."""
    count = 1
    for size, k, s, p, d in zip(spatial, geometry.kernel, geometry.stride, geometry.padding,
                                geometry.dilation, strict=True):
        count *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return count


def _elements_per_sample(weight_shape, cin: int, positions: int, groups: int,
                         method: str) -> int:
    taps = int(weight_shape[2]) * int(weight_shape[3])
    patches = cin * taps * positions
    if method == "gram":
        return patches + cin * taps * taps
    return patches * 2 + cin * positions * (weight_shape[0] // groups)


def choose_method(weight_shape: torch.Size | tuple[int, ...], positions: int,
                  groups: int = 1, samples: int = 1) -> str:
    """Pick by estimated multiply-adds per input channel for a batch of ``samples``.

    direct: out/g * k2 * P products plus out/g * P outputs written and read back, per sample;
    gram: k2 * k2 * P for the Gram matrix plus out/g * k2 (k2 + 1) / 2 for the quadratic
    forms, per sample, plus building the table of kernel-tap products once per batch.
    """
    per_group_out = weight_shape[0] // groups
    taps = int(weight_shape[2]) * int(weight_shape[3])
    pairs = taps * (taps + 1) / 2
    direct = samples * per_group_out * positions * (taps + _MEMORY_WEIGHT)
    gram = samples * (taps * taps * positions + per_group_out * pairs) \
        + _MEMORY_WEIGHT * per_group_out * pairs
    return "gram" if gram < direct else "direct"


def _abs_patches(x: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """|x| unfolded as the layer sees it: [N, C_in, k*k, P]."""
    n, c = x.shape[:2]
    cols = F.unfold(x.detach().abs().float(), geometry.kernel, geometry.dilation,
                    geometry.padding, geometry.stride)
    return cols.view(n, c, -1, cols.shape[-1])


def _grouped(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """[out, in/g, T] -> [in, out/g, T]: for input channel c, the slices of its group's filters."""
    out, per_in, taps = kernel.shape
    per_out = out // groups
    return kernel.view(groups, per_out, per_in, taps).permute(0, 2, 1, 3).reshape(
        groups * per_in, per_out, taps)


def _ungrouped(norms: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, in, out/g] -> [N, out, in/g]."""
    n, cin, per_out = norms.shape
    per_in = cin // groups
    return norms.view(n, groups, per_in, per_out).permute(0, 1, 3, 2).reshape(
        n, groups * per_out, per_in)


def _direct_norms(kernel: torch.Tensor, patches: torch.Tensor, groups: int) -> torch.Tensor:
    """Per sample: y_cjp = sum_t |K|_jct patch_ctp, norm over p. Returns [N, out, in/g]."""
    n, cin, taps, positions = patches.shape
    k = _grouped(kernel, groups)  # [in, out/g, T]
    cols = patches.permute(1, 0, 3, 2).reshape(cin, n * positions, taps)
    maps = torch.bmm(cols, k.transpose(1, 2))  # [in, N*P, out/g]
    norms = maps.view(cin, n, positions, -1).square().sum(2).sqrt()  # [in, N, out/g]
    return _ungrouped(norms.permute(1, 0, 2), groups)


def _gram_norms(kernel: torch.Tensor, patches: torch.Tensor, groups: int) -> torch.Tensor:
    """Per sample: ||K (*) x||^2 = sum_{t,u} K_t K_u G_tu with G = sum_p patch_tp patch_up.

    Only the upper triangle (t <= u) is used, off-diagonal terms doubled.
    """
    taps = patches.shape[2]
    gram = torch.matmul(patches, patches.transpose(2, 3))  # [N, in, T, T]
    rows, cols = torch.triu_indices(taps, taps)
    weights = torch.where(rows == cols, 1.0, 2.0)
    gram_upper = gram[:, :, rows, cols].permute(1, 0, 2)  # [in, N, T(T+1)/2]
    k = _grouped(kernel, groups)  # [in, out/g, T]
    outer = (k[:, :, rows] * k[:, :, cols] * weights).transpose(1, 2)  # [in, U, out/g]
    squared = torch.bmm(gram_upper, outer).clamp_min(0)  # [in, N, out/g]
    return _ungrouped(squared.sqrt().permute(1, 0, 2), groups)
