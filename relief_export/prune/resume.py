"""The run-state file of ``relief-export prune`` (``OUT.resume``, next to ``--out``).

A ``torch.save`` dict that loads with ``weights_only=True``: format tag and version, the
run's fingerprint (source checkpoint sha256, options, number of processes), the iteration in
progress, the history, the model's state (weights, ``weight_orig`` / ``weight_mask``) and
masks, and, inside an iteration's fine-tuning, the FitState (optimizer, scheduler, best
weights, losses) with every rank's generator states. Written by rank 0, atomically; read by
every rank.
"""

from __future__ import annotations

import io
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReliefError
from ..files import write_file
from ..graph.masks import apply_masks, masks_of
from ..inputs.safe_torch import load_torch_file
from .distributed import World
from .relief import RunState
from .train import FitResult, FitState

FORMAT, VERSION = "relief_export.run", 1
PER_RANK = ("epoch_generator", "generator", "rng")


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume")


def save_run_state(path: Path, state: RunState, model: nn.Module, fingerprint: dict[str, Any],
                   world: World, inputs: list[Path]) -> None:
    """Collective: every rank hands in its generator states; rank 0 writes the file."""
    fit = state.fit
    per_rank = world.gather({k: getattr(fit, k) for k in PER_RANK} if fit else None)
    if not world.main:
        return
    shared = None if fit is None else {
        **{f.name: getattr(fit, f.name) for f in fields(fit) if f.name not in PER_RANK},
        "result": asdict(fit.result)}
    payload = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint,
               "iteration": state.iteration, "history": state.history,
               "model": model.state_dict(), "masks": masks_of(model), "fit": shared,
               "ranks": per_rank if fit else None}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_file(path, buffer.getvalue(), inputs=inputs)


def load_run_state(path: Path, model: nn.Module, fingerprint: dict[str, Any],
                   world: World) -> RunState:
    """The saved state, after restoring the model's weights and masks from it; refuses a
    file from another run (other source, options or number of processes)."""
    if not path.is_file():
        raise ReliefError(f"{path}: no run state to resume (it is written next to --out "
                          "after every iteration and every --save-every epochs)")
    payload = load_torch_file(path, trust=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT \
            or payload.get("version") != VERSION:
        raise ReliefError(f"{path}: not a relief_export run state")
    saved = payload.get("fingerprint")
    if saved != fingerprint:
        differs = sorted(k for k in {*fingerprint, *(saved or {})}
                         if (saved or {}).get(k) != fingerprint.get(k))
        raise ReliefError(f"{path}: written by another run (it differs in: "
                          f"{', '.join(differs)}); resume with the same checkpoint, options "
                          "and number of processes, or remove the file to start afresh")
    try:
        apply_masks(model, payload["masks"])
        model.load_state_dict(payload["model"])
        return RunState(int(payload["iteration"]), list(payload["history"]),
                        _fit_state(payload["fit"], payload["ranks"], world))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ReliefError(f"{path}: corrupt run state ({error})") from None


def _fit_state(shared: dict[str, Any] | None, ranks: list[dict[str, Any]] | None,
               world: World) -> FitState | None:
    if shared is None:
        return None
    if ranks is None or len(ranks) != world.size:
        raise ValueError("generator states for another number of processes")
    result = FitResult(**shared["result"])
    return FitState(**{**shared, "result": result, **ranks[world.rank]})
