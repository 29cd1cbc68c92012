"""``relief-export bench A.onnx [B.onnx ...]``: latency, size, MACs, accuracy; table/JSON/PNG."""

from __future__ import annotations

import argparse

from ..bench import benchmark
from ..files import check_output, write_files


def bench_command(args: argparse.Namespace) -> int:
    wanted = {path: render for path, render in ((args.json, "json_bytes"),
                                                (args.plot, "plot_bytes")) if path is not None}
    for path in wanted:
        check_output(path, inputs=args.models)
    report = benchmark(args.models, batch_sizes=tuple(args.batch), threads=tuple(args.threads),
                       warmup=args.warmup, repeats=args.repeats, data=args.data,
                       memory=not args.no_memory)
    print(report.table())
    written = write_files({path: getattr(report, render)() for path, render in wanted.items()},
                          inputs=args.models)
    for path in written:
        print(f"wrote {path}")
    return 0
