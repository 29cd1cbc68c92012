"""Which torch.fx call targets are which kind of operation (shared by pruning and compaction).

Module calls, functional calls, Tensor methods and the ATen overloads found in torch.export
archives are listed side by side.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten
LAYER_FUNCTIONS = {F.linear: "linear", F.conv1d: "conv", F.conv2d: "conv",
                   aten.linear.default: "linear", aten.conv1d.default: "conv",
                   aten.conv2d.default: "conv"}
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU,
                       nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish,
                       nn.Softplus)
ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu,
                         F.gelu, F.silu, torch.sigmoid, torch.tanh, F.hardtanh, F.hardswish,
                         F.mish, F.softplus, aten.relu.default, aten.relu_.default,
                         aten.sigmoid.default, aten.tanh.default, aten.hardtanh.default,
                         aten.gelu.default, aten.silu.default, aten.leaky_relu.default,
                         aten.relu6.default, aten.hardswish.default, aten.hardsigmoid.default}
ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_"}
IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
IDENTITY_FUNCTIONS = {F.dropout, F.dropout2d, aten.clone.default, aten.contiguous.default}
IDENTITY_METHODS = {"contiguous", "clone", "detach", "float"}
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                  F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.avg_pool1d, F.avg_pool2d,
                  torch.max_pool1d, torch.max_pool2d, torch.avg_pool1d,
                  torch.adaptive_avg_pool1d, torch.adaptive_max_pool1d,
                  aten.max_pool1d.default, aten.max_pool2d.default,
                  aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default}
AVERAGE_POOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, torch.avg_pool1d,
                          aten.avg_pool1d.default, aten.avg_pool2d.default}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add, aten.add.Tensor}
MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul, aten.mul.Tensor}
DIV_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide,
                 aten.div.Tensor}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, aten.flatten.using_ints, aten.view.default,
                     aten.reshape.default, aten._unsafe_view.default}
UNSQUEEZE_FUNCTIONS = {torch.unsqueeze, torch.squeeze, aten.unsqueeze.default,
                       aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default}
SIZED_RESHAPES = {torch.reshape, aten.view.default, aten.reshape.default,
                  aten._unsafe_view.default}
SIZED_RESHAPE_METHODS = {"view", "reshape"}
TRANSPOSE_FUNCTIONS = {torch.transpose, aten.transpose.int}
PERMUTE_FUNCTIONS = {torch.permute, aten.permute.default}
EXPAND_FUNCTIONS = {torch.broadcast_to, aten.expand.default}
LAYER_NORM_FUNCTIONS = {F.layer_norm, aten.layer_norm.default}
GROUP_NORM_FUNCTIONS = {F.group_norm, aten.group_norm.default}
CAT_FUNCTIONS = {torch.cat, aten.cat.default}
SPLIT_FUNCTIONS = {torch.split, torch.chunk, aten.split.Tensor, aten.split_with_sizes.default,
                   aten.chunk.default}
MEAN_FUNCTIONS = {torch.mean, torch.amax, aten.mean.dim, aten.amax.default}
RESHAPE_METHODS = {"view", "reshape", "flatten"}
# pad(input, pad, mode="constant", value=None), same arguments in both spellings
PAD_FUNCTIONS = {F.pad, aten.pad.default}
# calls that read a tensor's shape, not its values
SHAPE_QUERIES = {"size", "dim", aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int}
TENSOR_PROPERTIES = {"shape", "dtype", "device", "ndim"}  # getattr(x, name) in a torch.fx graph
ATTENTION_FUNCTIONS = {F.scaled_dot_product_attention,
                       aten.scaled_dot_product_attention.default}
# hand-written attention: scores = q @ k^T, softmax(scores) @ v; softmax(input, dim, ...)
MATMUL_FUNCTIONS = {torch.matmul, operator.matmul, aten.matmul.default}
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax, aten._softmax.default, aten.softmax.int}
