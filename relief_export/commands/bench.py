"""``relief-export bench A.onnx [B.onnx ...]``: latency, size, MACs, accuracy; table/JSON/PNG.
``--int8-baseline OUT.onnx`` adds the first model quantized with our int8 recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from ..bench import benchmark
from ..bench.graph_stats import graph_stats, timing_problem
from ..errors import ReliefError, first_line
from ..files import check_output, write_file, write_files
from ..int8 import int8_samples
from ..onnx.formats.base import PREFIX
from ..onnx.quantize import quantize
from ._options import data_spec


def bench_command(args: argparse.Namespace) -> dict:
    wanted = {path: render for path, render in ((args.json_out, "json_bytes"),
                                                (args.plot, "plot_bytes")) if path is not None}
    for path in wanted:
        check_output(path, inputs=args.models)
    models = list(args.models)
    spec = data_spec(args, args.data)
    if args.int8_baseline is not None:
        models.append(_int8_baseline(Path(args.models[0]), Path(args.int8_baseline),
                                     spec, args.models))
    report = benchmark(models, batch_sizes=tuple(args.batch), threads=tuple(args.threads),
                       warmup=args.warmup, repeats=args.repeats, data=spec,
                       memory=not args.no_memory)
    print(report.table())
    written = write_files({path: getattr(report, render)() for path, render in wanted.items()},
                          inputs=models)
    for path in written:
        print(f"wrote {path}")
    return {**report.to_dict(), "written": [str(p) for p in written]}


def _int8_baseline(source: Path, out: Path, data: str | None, inputs: list[str]) -> Path:
    """``source`` quantized (static QDQ, per-channel int8 weights, uint8 activations,
    MinMax on 256 training samples of ``data``), written to ``out``."""
    check_output(out, inputs=inputs)
    if data is None:
        raise ReliefError("--int8-baseline needs --data SPEC: its training split calibrates "
                          "the quantization")
    stats = graph_stats(source)
    problem = timing_problem(source, stats)
    if problem is not None:
        raise ReliefError(problem)
    model = onnx.load(source)
    if any(node.name.startswith(PREFIX) for node in model.graph.node):
        raise ReliefError(f"{source}: its weights are encoded (relief_export decoders), which "
                          "the quantizer cannot see; give the dense export first (--dense-out "
                          "of the export), or export ours with --int8")
    samples = int8_samples(data, [1, *stats.input_shape], 256, False)
    try:
        quantized = quantize(model, samples.calibration, "minmax")
    except ReliefError as error:
        raise ReliefError(f"{source}: {first_line(error)}") from None
    written = write_file(out, quantized.SerializeToString(), inputs=inputs)
    print(f"wrote {written} ({source} quantized to int8)")
    return written
