"""``relief-export MODEL --out OUT.onnx``: the main command."""

from __future__ import annotations

import argparse
import sys

from ..pipeline import export_onnx, kept_table, sparse_table, tensor_table
from ..progress import is_quiet
from ._options import data_spec, source_options
from .inspect import print_notes


def export_command(args: argparse.Namespace) -> dict:
    report = export_onnx(args.model, args.out, input_shape=args.input_shape,
                         weights=args.weights, fp16_weights=args.fp16_weights,
                         opset=args.opset, align=args.align, dense_out=args.dense_out,
                         verify_outputs=not args.no_verify, **source_options(args),
                         report_path=args.report,
                         int8=args.int8, calib_data=data_spec(args, args.calib_data, args.model),
                         calib_samples=args.calib_samples, calib_method=args.calib_method,
                         calib_synthetic=args.calib_synthetic, int8_layers=args.int8_layers,
                         int8_batch=args.int8_batch,
                         accept_accuracy_drop=args.accept_accuracy_drop,
                         int8_reduce_range=args.int8_reduce_range,
                         strict=args.strict, sparse_compute=args.sparse_compute,
                         tune_batches=args.tune_batch, tune_threads=args.tune_threads,
                         tune_cache=args.tune_cache,
                         progress=_progress)
    print_notes(report.notes)
    if args.verbose:
        print(tensor_table(report))
        print(kept_table(report))
        if report.sparse_compute:
            print(sparse_table(report))
    print(report.summary())
    return report.to_dict()


def _progress(message: str) -> None:
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)
