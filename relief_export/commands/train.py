"""``relief-export train``: train a zoo model on a data set, write a dense checkpoint."""

from __future__ import annotations

import argparse

import torch

from .. import data, models
from ..errors import ReliefError, first_line
from ..files import check_output
from ..inputs import save_checkpoint
from ..prune.tasks import check_labels
from ..prune.train import evaluate, fit
from ._options import data_spec, fit_config


def build_for_data(arch: str, dataset: data.ImageDataset) -> torch.nn.Module:
    """A zoo model sized for the data set's channels and classes, checked on one sample."""
    channels = dataset.sample_shape[0]
    model = models.build(arch, num_classes=dataset.num_classes, in_channels=channels)
    check_input(model, [1, *dataset.sample_shape], arch)
    return model


def check_input(model: torch.nn.Module, shape: list[int], name: str) -> None:
    """Raise a clear error when ``model`` cannot run on an input of ``shape``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    except RuntimeError as error:
        message = first_line(error)
        raise ReliefError(f"{name} cannot take inputs of shape {shape}: {message}") from None
    finally:
        model.train(was_training)


def train_command(args: argparse.Namespace) -> dict:
    check_write = check_output(args.out)
    config = fit_config(args)
    spec = data_spec(args, args.data)
    assert spec is not None
    train_full = data.load(spec, "train")
    test_set = data.load(spec, "test")
    check_labels(config.task, train_full.labels, f"--data {args.data}")
    train_set, val_set = data.train_val_split(train_full, args.val_fraction, args.seed)
    torch.manual_seed(args.seed)
    model = build_for_data(args.arch, train_full)
    result = fit(model, train_set, config, val_set, desc=f"train {args.arch}")
    test_accuracy = evaluate(model, test_set, task=config.task)
    metrics = {"test_accuracy": test_accuracy, "init_seed": args.seed,
               "val_accuracy": result.best_val_accuracy,
               "best_epoch": result.best_epoch + 1, "epochs": args.epochs,
               "train_config": {k: v for k, v in vars(config).items()}}
    kwargs = {"num_classes": train_full.num_classes, "in_channels": train_full.sample_shape[0]}
    save_checkpoint(check_write, model, arch={"name": args.arch, "kwargs": kwargs},
                    input_shape=[1, *train_full.sample_shape], data=spec, metrics=metrics)
    print(f"{args.arch} on {args.data}: validation accuracy {result.best_val_accuracy:.4f} "
          f"(epoch {result.best_epoch + 1}/{args.epochs}), test accuracy {test_accuracy:.4f}")
    print(f"wrote {check_write}")
    return {"out": str(check_write), "arch": args.arch, "data": args.data, **metrics}
