"""``relief-export prune``: NNrelief on any model input (a checkpoint, a state_dict with
--arch, a .pt2, an ONNX file, a trusted pickle, a Hugging Face folder), writing a masked
checkpoint that records how to rebuild the model (``inputs.architecture_of``).

Under torchrun (``torchrun --nproc_per_node N -m relief_export prune ...``) every process
runs this command: calibration, fine-tuning and evaluation are shared (see
prune/distributed.py), rank 0 alone prints and writes. The run state is saved next to
``--out`` after every iteration and every ``--save-every`` epochs; SIGTERM saves it and
exits 0; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import data, models, validate
from ..errors import ReliefError, first_line
from ..files import check_output
from ..graph.masks import effective_state_dict
from ..inputs import LoadedModel, architecture_of, read_model, save_checkpoint
from ..prune.distributed import World
from ..prune.relief import ReliefConfig, RunControl, RunInterrupted, RunState, relief
from ..prune.resume import load_run_state, save_run_state, state_path
from ..prune.tasks import check_labels
from ..table import format_table
from ._options import data_spec, fit_config, source_options
from .inspect import print_notes


def prune_command(args: argparse.Namespace) -> dict:
    validate.integer("--save-every", args.save_every, 0, 100_000)
    fit = fit_config(args)
    world = World.from_environment(fit.device)
    try:
        return _prune(args, world)
    finally:
        world.close()


def _prune(args: argparse.Namespace, world: World) -> dict:
    out = check_output(args.out, inputs=[args.model])
    saved_state = state_path(out)
    loaded = read_model(args.model, **source_options(args))
    world.check_identical("the input checkpoints of the processes", str(loaded.sha256))
    if world.main:
        print_notes(loaded.notes)
    arch = architecture_of(loaded)
    config = ReliefConfig(iterations=args.iterations, alpha_fc=args.alpha_fc,
                          alpha_conv=args.alpha_conv, calib_samples=args.calib_samples,
                          conv_score=args.conv_score, finetune=fit_config(args),
                          seed=args.seed, target_remaining=args.target_remaining,
                          blocks=args.blocks)
    spec = data_spec(args, args.data, args.model)
    assert spec is not None
    full = data.load(spec, "train")
    test = data.load(spec, "test")
    check_labels(config.finetune.task, full.labels, f"--data {args.data}")
    examples = _first_samples(full)
    _check_fits(loaded, examples, args.data)
    train, val = data.train_val_split(full, args.val_fraction, args.seed)
    rewind_to = _initial_state(arch, loaded.metrics) if args.rewind else None
    fingerprint = _fingerprint(spec, args, loaded, config, world)
    resume = load_run_state(saved_state, loaded.model, fingerprint, world) if args.resume \
        else None

    def save(state: RunState) -> None:
        save_run_state(saved_state, state, loaded.model, fingerprint, world, [Path(args.model)])

    with _stop_on_sigterm() as stop:
        control = RunControl(world, resume, save, args.save_every, stop.is_set)
        try:
            result = relief(loaded.model, train, config, val_data=val, test_data=test,
                            rewind_to=rewind_to, progress=world.main, control=control)
        except RunInterrupted as interrupted:
            if world.main:
                print(f"stopped by SIGTERM in iteration {interrupted.state.iteration}: run "
                      f"state saved to {saved_state}; continue with the same command and "
                      "--resume", file=sys.stderr)
            return {"stopped": True, "state": str(saved_state),
                    "iteration": interrupted.state.iteration}
    if world.main:
        _write(out, args, spec, loaded, arch, config, result.model, result.history, full,
               examples)
        saved_state.unlink(missing_ok=True)
    return {"out": str(out), "history": result.history}


def _first_samples(samples: data.ImageDataset) -> torch.Tensor:
    """The first two samples as the model reads them (a batch)."""
    return torch.stack([samples[i][0] for i in range(min(2, len(samples)))])


def _check_fits(loaded: LoadedModel, batch: torch.Tensor, spec: str) -> None:
    """A batch of the data through the model, before any work: the data gives one input per
    sample, of its shape and dtype."""
    try:
        with torch.no_grad():
            loaded.model.eval()(batch)
    except Exception as error:
        raise ReliefError(f"{loaded.source} does not run on the samples of --data {spec} "
                          f"(one input per sample, {list(batch.shape[1:])} {batch.dtype}): "
                          f"{first_line(error)}") from None


def _write(out: Path, args: argparse.Namespace, spec: str, loaded: LoadedModel,
           arch: dict[str, Any], config: ReliefConfig, model: torch.nn.Module,
           history: list[dict], full: data.ImageDataset, examples: torch.Tensor) -> None:
    final = history[-1]
    metrics = {**loaded.metrics, "test_accuracy": final["test_accuracy"],
               "val_accuracy": final["val_accuracy"],
               "dense_test_accuracy": history[0]["test_accuracy"],
               "remaining_weights": final["remaining_weights"],
               "remaining_flops": final["remaining_flops"],
               "prune_config": {k: v for k, v in vars(config).items() if k != "finetune"}}
    save_checkpoint(out, model, arch=arch, inputs=(args.model,),
                    input_shape=[1, *full.sample_shape], data=spec,
                    metrics=metrics, history=history,
                    example_inputs=None if examples.is_floating_point() else (examples,))
    print(history_table(history))
    print(f"wrote {out}")


def _fingerprint(spec: str, args: argparse.Namespace, loaded: LoadedModel,
                 config: ReliefConfig, world: World) -> dict[str, Any]:
    """What a resumed run must share with the one that saved the state."""
    return {"source_sha256": loaded.sha256, "data": spec,
            "val_fraction": args.val_fraction, "rewind": args.rewind,
            "config": repr(config), "processes": world.size}


class _Flag:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: object) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[_Flag]:
    """While active, SIGTERM (what schedulers send before preemption) asks the run to stop
    at the next batch, saving its state."""
    flag = _Flag()
    try:
        previous = signal.signal(signal.SIGTERM, flag.set)
    except ValueError:  # not the main thread: no handler, no stop
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def history_table(history: list[dict]) -> str:
    """iteration, remaining weights / FLOPs, validation and test accuracy, seconds."""
    rows = [[h["iteration"], h["remaining_weights"], h["remaining_flops"],
             h.get("val_accuracy"), h.get("test_accuracy"), h["seconds"]] for h in history]
    return format_table(["iteration", "weights left", "FLOPs left", "val acc", "test acc",
                         "seconds"], rows)


def _initial_state(arch: dict, metrics: dict) -> dict[str, torch.Tensor]:
    """The weights the dense model started from: rebuilt from the seed ``train`` recorded."""
    if "name" not in arch or "init_seed" not in metrics:
        raise ReliefError("--rewind needs a checkpoint written by `relief-export train` "
                          "(it records the initialisation seed)")
    torch.manual_seed(int(metrics["init_seed"]))
    return effective_state_dict(models.build(arch["name"], **arch.get("kwargs", {})))
