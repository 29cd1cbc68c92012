"""Options shared by several commands, and the configuration objects built from them."""

from __future__ import annotations

import argparse

from ..catalog import LOSS_NAMES, TASK_NAMES


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def add_fit_options(parser: argparse.ArgumentParser, epochs: int) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    group.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                       help="optimizer")
    group.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay")
    group.add_argument("--milestones", type=int_list, default=[],
                       help="epochs at which the learning rate drops 10x, e.g. 30 or 20,40")
    group.add_argument("--batch-size", type=int, default=64,
                       help="training batch size (per process under torchrun)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of initialisation, shuffling and the validation split")
    group.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    group.add_argument("--augment", action="store_true",
                       help="random flips and padded crops (CIFAR-style) while training")
    group.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of the training split held out to select the best epoch")


def fit_config(args: argparse.Namespace):
    from ..prune.train import FitConfig

    return FitConfig(epochs=args.epochs, optimizer=args.optimizer, lr=args.lr,
                     momentum=args.momentum, weight_decay=args.weight_decay,
                     milestones=tuple(args.milestones), batch_size=args.batch_size,
                     seed=args.seed, device=args.device, augment=args.augment,
                     task=args.task, loss=args.loss)


def positive_list(text: str) -> list[int]:
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """How MODEL is read: trust, and the architecture of a state_dict."""
    group = parser.add_argument_group("reading MODEL")
    group.add_argument("--arch", default=None, metavar="NAME|pkg.module:Class",
                       help="MODEL is a state_dict: build this zoo architecture or class "
                       "(a class is imported from the current folder, needs --allow-factory)")
    group.add_argument("--arch-kwargs", type=json_object, default=None, metavar="JSON",
                       help='keyword arguments for --arch, e.g. \'{"num_classes": 10}\'')
    group.add_argument("--trust-pickle", action="store_true",
                       help="allow loading a pickled nn.Module (runs code from the file)")
    group.add_argument("--allow-factory", action="store_true",
                       help="allow importing the model class or factory that MODEL or --arch "
                       "names (runs that code)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="MODEL is a Hugging Face folder whose class is its own code: "
                       "allow running it")


def source_options(args: argparse.Namespace) -> dict:
    """read_model's keyword arguments from the options above."""
    return {"trust": args.trust_pickle, "allow_factory": args.allow_factory,
            "arch": args.arch, "arch_kwargs": args.arch_kwargs,
            "trust_remote_code": args.trust_remote_code}


def json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_data_options(parser: argparse.ArgumentParser, what: str = "--data") -> None:
    """How the data set that ``what`` names is read; each becomes an option of its spec."""
    group = parser.add_argument_group(f"reading {what}")
    group.add_argument("--image-size", default=None, metavar="H[,W]",
                       help="imagefolder: resize every image to H x W")
    group.add_argument("--normalize", default=None, metavar="none|imagenet|dataset",
                       help="imagefolder: per-channel normalisation (default none: [0, 1])")
    group.add_argument("--text-column", default=None, metavar="NAME[,NAME]",
                       help="hf: the text column(s) (default text)")
    group.add_argument("--label-column", default=None, metavar="NAME",
                       help="hf, csv: the label column (default label; csv: else the last)")
    group.add_argument("--tokenizer", default=None, metavar="DIR",
                       help="hf: the tokenizer folder (default: MODEL, when it is a Hugging "
                       "Face folder)")
    group.add_argument("--max-length", default=None, type=int, metavar="N",
                       help="hf: tokens per sample (padded / truncated; default 128)")


def data_spec(args: argparse.Namespace, spec: str | None, model: str | None = None
              ) -> str | None:
    """``spec`` with the options above added; an ``hf:`` spec takes MODEL's tokenizer when
    MODEL is a Hugging Face folder and --tokenizer is not given."""
    if spec is None:
        return None
    from pathlib import Path

    from ..data import with_options
    from ..inputs.hf_folder import is_hf_folder

    tokenizer = args.tokenizer
    if tokenizer is None and model is not None and spec.startswith("hf:") and \
            "tokenizer=" not in spec and is_hf_folder(Path(model)):
        tokenizer = model
    return with_options(spec, image_size=args.image_size, normalize=args.normalize,
                        text_column=args.text_column, label_column=args.label_column,
                        tokenizer=tokenizer, max_length=args.max_length)


def add_task_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("task")
    group.add_argument("--task", default="classification", choices=TASK_NAMES,
                       help="what the model predicts; sets the default loss and the score "
                       "reported as accuracy (R^2 for regression)")
    group.add_argument("--loss", default=None, choices=LOSS_NAMES,
                       help="fine-tuning loss (default: cross-entropy, or mse for regression)")
