"""A Hugging Face model folder (``save_pretrained``: config.json + model.safetensors), read
with transformers offline. The class is the config's ``architectures[0]``: a transformers
class, or (only with ``trust_remote_code``) the folder's own code. Weights load only from
safetensors, never from pickled ``.bin`` files.

The model is wrapped in ``HFModel``: one input (``main_input_name``: token ids or pixel
values; for token ids the attention mask is ``input_ids != pad_token_id``), one output (the
``logits``, else the first output). Our checkpoint saves it as
``arch = {"hf": {"class": NAME, "config": JSON text}}`` (plus ``"folder"`` for remote code)
and rebuilds it from the config, without any file from the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReliefError, first_line
from ..quiet import quiet_libraries
from .loaded import LoadedModel, ReadOptions, file_sha256

EXAMPLE_TOKENS = 16


class HFModel(nn.Module):
    """``forward(x)``: the wrapped model's prediction for its main input ``x``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.input_name = str(getattr(model, "main_input_name", "input_ids"))
        self.pad_token_id = getattr(model.config, "pad_token_id", None) \
            if self.input_name == "input_ids" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs: dict[str, torch.Tensor] = {self.input_name: x}
        if self.pad_token_id is not None:
            inputs["attention_mask"] = (x != self.pad_token_id).long()
        output = self.model(**inputs)
        logits = output.get("logits") if hasattr(output, "get") else None
        return logits if isinstance(logits, torch.Tensor) else output[0]


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_hf_folder(folder: Path, options: ReadOptions) -> LoadedModel:
    transformers = _transformers(folder)
    config = _config(transformers, folder, options.trust_remote_code)
    cls = _model_class(transformers, config, folder, options.trust_remote_code)
    if not any((folder / name).is_file() for name in
               ("model.safetensors", "model.safetensors.index.json")):
        raise ReliefError(f"{folder}: no model.safetensors; save the model with "
                          "save_pretrained(folder) (pickled .bin weights are not read)")
    try:
        with _quiet(transformers):
            model = cls.from_pretrained(str(folder), local_files_only=True,
                                        use_safetensors=True,
                                        trust_remote_code=options.trust_remote_code)
    except Exception as error:
        raise ReliefError(f"{folder}: transformers could not load the model "
                          f"({first_line(error)})") from None
    wrapped = HFModel(model).eval()
    arch = {"hf": {"class": cls.__name__, "config": config.to_json_string()}}
    if options.trust_remote_code and not hasattr(transformers, cls.__name__):
        arch["hf"]["folder"] = str(folder.resolve())
    examples = (example_input(model),)
    return LoadedModel(wrapped, folder, "hf", list(examples[0].shape), arch=arch,
                       example_inputs=examples, sha256=folder_sha256(folder))


def folder_sha256(folder: Path) -> str:
    """sha256 over the config and the safetensors files (name, then bytes, sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        digest.update(path.name.encode() + b"\0" + bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def example_input(model: nn.Module) -> torch.Tensor:
    """Two seeded inputs: token ids in 1..vocab-1, or U(0, 1) pixels at the config's size."""
    config, generator = model.config, torch.Generator().manual_seed(0)
    if getattr(model, "main_input_name", "input_ids") == "input_ids":
        vocab = int(getattr(config, "vocab_size", 2))
        length = min(EXAMPLE_TOKENS, int(getattr(config, "max_position_embeddings", 16)))
        return torch.randint(1, max(vocab, 2), (2, length), generator=generator)
    size = getattr(config, "image_size", 32)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return torch.rand(2, int(getattr(config, "num_channels", 3)), height, width,
                      generator=generator)


def check_hf_entry(entry: Any, where: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("class"), str) or \
            not entry["class"].isidentifier() or not isinstance(entry.get("config"), str) or \
            not isinstance(entry.get("folder", ""), str):
        raise ReliefError(f"{where}: arch hf entry must hold class (a transformers class name) "
                          "and config (JSON text)")
    return {k: entry[k] for k in ("class", "config", "folder") if k in entry}


def rebuild_hf(entry: dict[str, Any], source: Path, options: ReadOptions) -> nn.Module:
    """The model class built from the saved config, randomly initialised (weights follow)."""
    transformers = _transformers(source)
    if "folder" in entry:
        folder = Path(entry["folder"])
        if not options.trust_remote_code:
            raise ReliefError(f"{source}: the model's class is code from {folder}; pass "
                              "--trust-remote-code if you trust it")
        config = _config(transformers, folder, True)
        return HFModel(_model_class(transformers, config, folder, True)._from_config(config))
    cls: Any = getattr(transformers, entry["class"], None)
    is_model_class = isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
    if not is_model_class:
        raise ReliefError(f"{source}: {entry['class']!r} is not a transformers model class "
                          f"in transformers {transformers.__version__}")
    try:
        config = cls.config_class.from_dict(json.loads(entry["config"]))
        return HFModel(cls(config)).eval()
    except Exception as error:
        raise ReliefError(f"{source}: cannot build {entry['class']} from its saved config "
                          f"({first_line(error)})") from None


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No weight-loading progress bar or advice from transformers while active."""
    bars = transformers.utils.logging
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        with quiet_libraries():
            yield
    finally:
        if shown:
            bars.enable_progress_bar()


def _transformers(where: Path) -> Any:
    try:
        import transformers
    except ImportError:
        raise ReliefError(f"{where}: a Hugging Face model needs the transformers package: "
                          "pip install transformers") from None
    return transformers


def _config(transformers: Any, folder: Path, trust_remote_code: bool) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as error:
        text = first_line(error)
        if not trust_remote_code and ("trust_remote_code" in text or "custom code" in text):
            raise ReliefError(f"{folder}: the model's classes are code in the folder; pass "
                              "--trust-remote-code if you trust it") from None
        raise ReliefError(f"{folder}/config.json: not a readable Hugging Face config "
                          f"({text})") from None


def _model_class(transformers: Any, config: Any, folder: Path, trust_remote_code: bool) -> Any:
    names = getattr(config, "architectures", None) or []
    if not names:
        raise ReliefError(f"{folder}/config.json names no architecture (\"architectures\"); "
                          "save the model with save_pretrained")
    cls = getattr(transformers, names[0], None)
    if cls is not None:
        return cls
    auto_map = getattr(config, "auto_map", None) or {}
    if not trust_remote_code or not auto_map:
        hint = "; it is code from the folder: pass --trust-remote-code" if auto_map else ""
        raise ReliefError(f"{folder}: {names[0]!r} is not a transformers class{hint}")
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    reference = next((v for k, v in auto_map.items() if k.startswith("AutoModel")), None)
    if reference is None:
        raise ReliefError(f"{folder}: auto_map names no AutoModel class")
    return get_class_from_dynamic_module(reference, str(folder), local_files_only=True)
