"""How much x86 int8 kernels without VNNI cost in accuracy, and what 7-bit weights give back.

    .venv/bin/python tools/int8_saturation.py

Trains the test suite's LeNet-300-100 (mnist5k, 90% of each layer's weights and 40 hidden
units masked, fine-tuned), exports it with ``--int8 --int8-layers all`` in 8-bit and in 7-bit
weights (``--int8-reduce-range off|on``) and recomputes each int8 model in numpy from its
own quantization parameters, twice: with exact int32 sums, and with the pairwise saturating
int16 sums of ``vpmaddubsw`` (u8 x s8 products added two at a time, clipped to
[-32768, 32767]), which is how such CPUs run them. Prints the top-1 agreement with fp32 of
each on the 1,000 test digits.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch.nn.utils import prune

from relief_export import data, models, save_checkpoint
from relief_export.cli import main as cli_main
from relief_export.prune import FitConfig, fit

INT16 = (-32768, 32767)


def trained_lenet() -> torch.nn.Module:
    """The int8 tests' model (tests/int8/conftest.py loads it from here): seeded, 3 epochs,
    90% of each layer's weights and hidden units 0-39 masked, 2 epochs of fine-tuning."""
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    train = data.load("mnist5k", "train")
    fit(model, train, FitConfig(epochs=3), progress=False)
    for layer in (model[1], model[3], model[5]):
        prune.l1_unstructured(layer, "weight", amount=0.9)
    with torch.no_grad():
        model[1].weight_mask[:40] = 0
    fit(model, train, FitConfig(epochs=2), progress=False)
    return model.eval()


def integer_forward(model: onnx.ModelProto, x: np.ndarray, saturate: bool) -> np.ndarray:
    """The QDQ Gemm chain (Relu between layers) in integers: acc = sum_k a_k w_k - z_a sum_k
    w_k, y = acc * s_a * s_w + bias; with ``saturate`` the sum runs over pairs clipped to
    int16."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {n.output[0]: n for n in model.graph.node}
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    h = x.reshape(len(x), -1).astype(np.float64)
    for index, gemm in enumerate(gemms):
        activation, weight, bias = (producer[name] for name in gemm.input[:3])
        scale_a, zero_a = values[activation.input[1]], int(values[activation.input[2]])
        q_w, scale_w = values[weight.input[0]].astype(np.int64), values[weight.input[1]]
        q_a = np.clip(np.round(h / scale_a) + zero_a, 0, 255).astype(np.int64)
        if saturate:
            width = q_a.shape[1] + q_a.shape[1] % 2
            q_a = np.pad(q_a, ((0, 0), (0, width - q_a.shape[1])))
            q_w = np.pad(q_w, ((0, 0), (0, width - q_w.shape[1])))
            pairs = q_a[:, 0::2, None] * q_w.T[None, 0::2] + q_a[:, 1::2, None] * q_w.T[None, 1::2]
            acc = np.clip(pairs, *INT16).sum(1)
        else:
            acc = q_a @ q_w.T
        acc = acc - zero_a * q_w.sum(1)[None, :]
        h = acc * (scale_a * scale_w)[None, :] + \
            values[bias.input[0]].astype(np.float64) * values[bias.input[1]]
        if index < len(gemms) - 1:
            h = np.maximum(h, 0)
    return h


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="relief_saturation_"))
    model = trained_lenet()
    checkpoint = save_checkpoint(folder / "lenet.pt", model,
                                 arch={"name": "lenet300_100", "kwargs": {}},
                                 input_shape=[1, 1, 28, 28], data="mnist5k")
    images, _ = data.load("mnist5k", "test").tensors()
    with torch.no_grad():
        reference = model(images).argmax(1).numpy()
    print(f"{'weights':<8} {'exact int32':>12} {'saturating int16':>17}")
    for mode, label in (("off", "8-bit"), ("on", "7-bit")):
        out = folder / f"int8_{mode}.onnx"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main([str(checkpoint), "--out", str(out), "--int8", "--int8-layers",
                             "all", "--calib-method", "minmax", "--weights", "dense",
                             "--int8-reduce-range", mode, "--accept-accuracy-drop", "50"])
        if code != 0:
            print(f"export with --int8-reduce-range {mode} failed (exit {code})")
            return 1
        quantized = onnx.load(out)
        agreement = [float(np.mean(integer_forward(quantized, images.numpy(), s).argmax(1)
                                   == reference)) for s in (False, True)]
        print(f"{label:<8} {100 * agreement[0]:>11.1f}% {100 * agreement[1]:>16.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
