"""``relief-export MODEL --out OUT.onnx`` and the subcommands train, prune, inspect, bench, demo.

Every handler raises ReliefError for bad input; ``main`` prints it as one line and returns
its exit code (2, or 1 for a failed verification).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._version import __version__
from .catalog import REDUCE_RANGE_MODES, SPEC_HELP, ZOO_NAMES
from .commands._options import (
    add_data_options,
    add_fit_options,
    add_source_options,
    add_task_options,
    positive_list,
)
from .errors import ReliefError
from .progress import set_quiet
from .quiet import quiet_libraries

PROG = "relief-export"
FORMATS = ("auto", "dense", "csr", "bsr", "bitmask")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or \
                not action.option_strings:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})".replace("%", "%%").replace("%%(", "%(")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--quiet", action="store_true",
                       help="print nothing but errors and warnings (no tables, no progress)")
    group.add_argument("--json", action="store_true",
                       help="print the result as JSON on stdout instead of tables")


# command -> what it does (its --help, and the list under the main --help)
COMMANDS = {"train": "train a zoo model and save a dense checkpoint",
            "prune": "NNrelief: prune a dense checkpoint iteratively",
            "inspect": "per-layer density and dead units, and what export would write",
            "bench": "benchmark ONNX models with onnxruntime (CPU)",
            "demo": "the whole pipeline on the packaged MNIST digits"}


def _parser(sub: Any, name: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name],
                            formatter_class=HelpFormatter)
    _add_output_options(parser)
    return parser


def _train_parser(sub) -> None:
    parser = _parser(sub, "train")
    parser.add_argument("--arch", required=True, metavar="NAME",
                        help=f"zoo architecture: {', '.join(ZOO_NAMES)}")
    parser.add_argument("--data", required=True, help=SPEC_HELP)
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    add_data_options(parser)
    add_task_options(parser)
    add_fit_options(parser, epochs=20)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> dict:
    from .commands.train import train_command

    return train_command(args)


def _prune_parser(sub) -> None:
    parser = _parser(sub, "prune")
    parser.add_argument("model", help="the model: a checkpoint (.pt), a state_dict with --arch, "
                        "a .pt2, an ONNX file, a trusted pickle or a Hugging Face folder")
    parser.add_argument("--data", required=True, help=SPEC_HELP)
    parser.add_argument("--out", required=True, help="masked checkpoint to write (.pt)")
    group = parser.add_argument_group("NNrelief")
    group.add_argument("--iterations", type=int, default=5,
                       help="prune / fine-tune rounds")
    group.add_argument("--alpha-fc", type=float, default=0.95,
                       help="share of each Linear neuron's incoming signal to keep, in (0, 1]")
    group.add_argument("--alpha-conv", type=float, default=0.9,
                       help="share of each conv filter's incoming signal to keep, in (0, 1]")
    group.add_argument("--calib-samples", type=int, default=1000,
                       help="training samples whose activations score the connections")
    group.add_argument("--conv-score", choices=("paper", "reference"), default="paper",
                       help="paper: mean over samples of the per-slice norm; reference: the "
                       "authors' code (norm of the mean)")
    group.add_argument("--target-remaining", type=float, default=None,
                       help="stop early once this fraction of the weights remains")
    group.add_argument("--blocks", type=int, default=1, metavar="B",
                       help="keep each layer's connections inside B groups of its units and "
                       "channels (chosen from the scores), so that --sparse-compute auto runs "
                       "them as B dense blocks; 1: plain NNrelief")
    group.add_argument("--rewind", action="store_true",
                       help="reset surviving weights to their initial values before fine-tuning")
    group = parser.add_argument_group("long runs (also under torchrun)")
    group.add_argument("--save-every", type=int, default=1, metavar="K",
                       help="also save the run state every K fine-tuning epochs (0: only "
                       "after each iteration); default 1")
    group.add_argument("--resume", action="store_true",
                       help="continue from the run state OUT.resume of an interrupted run")
    add_source_options(parser)
    add_data_options(parser)
    add_task_options(parser)
    add_fit_options(parser, epochs=10)
    parser.set_defaults(handler=_run_prune)


def _run_prune(args: argparse.Namespace) -> dict:
    from .commands.prune import prune_command

    return prune_command(args)


def _bench_parser(sub) -> None:
    parser = _parser(sub, "bench")
    parser.add_argument("models", nargs="+", help="ONNX files; the first is the baseline")
    parser.add_argument("--batch", type=positive_list, default=[1, 8, 64],
                        help="batch sizes to time, comma-separated")
    parser.add_argument("--threads", type=positive_list, default=[1],
                        help="onnxruntime intra-op thread counts, comma-separated")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed runs per model and configuration")
    parser.add_argument("--repeats", type=int, default=30,
                        help="timed runs per model and configuration (interleaved)")
    parser.add_argument("--data", default=None, help=f"measure accuracy on: {SPEC_HELP}")
    parser.add_argument("--json-out", default=None, metavar="B.json",
                        help="write the results as JSON to this file")
    parser.add_argument("--plot", default=None, help="write latency and size plots (PNG)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement (two child processes per model)")
    parser.add_argument("--int8-baseline", default=None, metavar="OUT.onnx",
                        help="also quantize the first model (static QDQ, per-channel int8, "
                        "calibrated on the training split of --data), write it to OUT.onnx "
                        "and benchmark it: the dense int8 row")
    add_data_options(parser)
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> dict:
    from .commands.bench import bench_command

    return bench_command(args)


def _demo_parser(sub) -> None:
    parser = _parser(sub, "demo")
    parser.add_argument("--out", default="demo_out", help="folder for models, report, figures")
    parser.add_argument("--quick", action="store_true", help="a few epochs only (smoke test)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> dict:
    from .commands.demo import run_demo

    return {"report": str(run_demo(args.out, quick=args.quick))}


def _inspect_parser(sub) -> None:
    parser = _parser(sub, "inspect")
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--input-shape", type=positive_list, default=None,
                        help="e.g. 1,1,28,28 (needed only when the file records none)")
    parser.add_argument("--align", type=int, default=8,
                        help="as for export: keep a multiple of N units per layer")
    parser.add_argument("--weights", choices=FORMATS, default="auto",
                        help="as for export: the weight encoding")
    parser.add_argument("--compact", action="store_true",
                        help="for an ONNX MODEL: show what export would do with it (default: "
                        "its metadata and integrity)")
    add_source_options(parser)
    parser.set_defaults(handler=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> dict:
    from .commands.inspect import inspect_command

    return inspect_command(args)


MODEL_HELP = ("the masked model: a relief_export checkpoint (.pt), a torch.export archive "
              "(.pt2), an ONNX model, a state_dict (with --arch) or, with --trust-pickle, a "
              "pickled nn.Module")
COMMANDS_HELP = "commands (relief-export COMMAND --help for their options):\n" + "\n".join(
    f"  {name:<9} {text}" for name, text in COMMANDS.items())

_SUBCOMMANDS: dict[str, Callable] = {"train": _train_parser, "prune": _prune_parser,
                                     "inspect": _inspect_parser, "bench": _bench_parser,
                                     "demo": _demo_parser}


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} MODEL --out OUT.onnx [options]\n       {PROG} COMMAND ...",
        description="Export a pruned PyTorch model to a compact, verified ONNX file.",
        epilog=COMMANDS_HELP, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--input-shape", type=positive_list, default=None,
                        help="e.g. 1,1,28,28 (needed only when the file records none)")
    parser.add_argument("--weights", choices=FORMATS,
                        default="auto", help="weight encoding (auto: smallest per tensor)")
    parser.add_argument("--fp16-weights", action="store_true",
                        help="store weight values as float16 (cast to float32 at load)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 to 23")
    parser.add_argument("--align", type=int, default=8,
                        help="keep a multiple of N units per layer (CPU kernels use blocks of "
                        "8); 1 keeps the minimum")
    parser.add_argument("--dense-out", default=None,
                        help="also write the masked model exported densely (the baseline)")
    parser.add_argument("--report", default=None, help="write the summary as JSON")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnx.checker and onnxruntime-vs-torch checks")
    parser.add_argument("--verbose", action="store_true", help="print one row per tensor")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1, no file) if a dead unit is kept (other than for "
                        "--align) or a region is left uncompacted")
    _int8_options(parser.add_argument_group(
        "int8 (static QDQ by onnxruntime.quantization, on top of compaction)"))
    _sparse_options(parser.add_argument_group(
        "sparse compute (sparse layers as dense blocks, where that measures faster)"))
    add_source_options(parser)
    add_data_options(parser, "--calib-data")
    _add_output_options(parser)
    parser.set_defaults(handler=_run_export)
    return parser


def _int8_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--int8", action="store_true",
                       help="quantize: per-channel symmetric int8 weights, uint8 activations")
    group.add_argument("--calib-data", default=None, metavar="SPEC",
                       help="calibration data (default: the checkpoint's data set)")
    group.add_argument("--calib-samples", type=int, default=256, metavar="N",
                       help="training samples that calibrate activation ranges (default 256)")
    group.add_argument("--calib-method", default="auto", metavar="METHOD",
                       help="minmax, percentile, entropy or auto: the one whose model agrees "
                       "best with fp32 on held-out samples (default auto)")
    group.add_argument("--calib-synthetic", action="store_true",
                       help="without data: calibrate on N(0,1) samples (the report says so)")
    group.add_argument("--int8-layers", default="auto", metavar="auto|all",
                       help="auto: int8 only where it measures faster (per layer, then the "
                       "whole model); all: every layer (default auto)")
    group.add_argument("--int8-batch", type=int, default=64, metavar="N",
                       help="batch size at which --int8-layers auto times (default 64)")
    group.add_argument("--accept-accuracy-drop", type=float, default=0.0, metavar="PTS",
                       help="allow top-1 agreement with fp32 this many points below 99%% "
                       "(default 0)")
    group.add_argument("--int8-reduce-range", choices=REDUCE_RANGE_MODES, default="auto",
                       help="7-bit weights, for x86 CPUs without VNNI whose int8 kernels "
                       "saturate 8-bit ones; auto: on where this CPU lacks VNNI; pass on when "
                       "the file will run on such a CPU (default auto)")


def _sparse_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--sparse-compute", choices=("auto", "off"), default="off",
                       help="auto: each sparse layer runs as dense blocks under a reordering "
                       "of its units and channels where that is timed faster at every "
                       "--tune-batch and --tune-threads (default off)")
    group.add_argument("--tune-batch", type=positive_list, default=[1, 64], metavar="N[,N...]",
                       help="batch sizes at which --sparse-compute auto times (default 1,64)")
    group.add_argument("--tune-threads", type=positive_list, default=[1], metavar="N[,N...]",
                       help="thread counts at which --sparse-compute auto times (default 1)")
    group.add_argument("--tune-cache", default=None, metavar="FILE",
                       help="keep --sparse-compute auto's layer timings in FILE (JSON, per "
                       "machine) and reuse them in later exports")


def _run_export(args: argparse.Namespace) -> dict:
    from .commands.export import export_command

    return export_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Prune PyTorch models with NNrelief and export compact ONNX.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends as one line on stderr and an exit code:
    2 bad input (ReliefError, OSError), 1 failed verification or an internal error
    (``RELIEF_EXPORT_DEBUG=1`` shows its traceback), 130 interrupted."""
    try:
        args_list = list(sys.argv[1:] if argv is None else argv)
        if not args_list:
            print(build_export_parser().format_help())
            return 0
        if args_list[0] in _SUBCOMMANDS:
            args = build_parser().parse_args(args_list)
        else:
            args = build_export_parser().parse_args(args_list)
        return _run(args)
    except ReliefError as error:
        return _fail(str(error), error.exit_code)
    except OSError as error:
        from .files import describe_os_error

        return _fail(describe_os_error(error), 2)
    except MemoryError:
        return _fail("out of memory; try a smaller batch, input shape or model", 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as error:
        if os.environ.get("RELIEF_EXPORT_DEBUG"):
            raise
        from .errors import first_line

        return _fail(f"internal error ({type(error).__name__}: {first_line(error)}); "
                     "set RELIEF_EXPORT_DEBUG=1 to see where", 1)


def _run(args: argparse.Namespace) -> int:
    """The handler, its tables on stdout unless --quiet / --json; --json prints its result."""
    silent = args.quiet or args.json
    set_quiet(silent)
    try:
        with quiet_libraries(), (contextlib.redirect_stdout(io.StringIO()) if silent
                                 else contextlib.nullcontext()):
            result = args.handler(args)
    finally:
        set_quiet(False)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
