"""Which slot groups compaction keeps, and why: the decide and align passes, repeated to a
fixed point over the layers' kept units."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from ..channels import SlotGraph
from ..graph.passes import Pass, PassResult, fixed_point
from .report import ALIGN_REASON


@dataclass
class Decision:
    """Kept group roots with the reason each is kept, and the kept units of every layer."""

    reasons: dict[int, str]
    rows: dict[fx.Node, torch.Tensor]
    representative: dict[fx.Node, int]  # padded conv -> the constant channel others merge into

    def kept(self, slots: SlotGraph, node: fx.Node) -> list[int]:
        return [c for c, slot in enumerate(slots.values[node].ids)
                if slots.union.find(slot) in self.reasons]


@dataclass
class Deciding:
    """The state the decision passes work on: kept units per layer, pins added on the way."""

    slots: SlotGraph
    align: int
    rows: dict[fx.Node, torch.Tensor]
    extra_pins: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    representative: dict[fx.Node, int] = field(default_factory=dict)


def _decide_round(state: Deciding) -> PassResult[Deciding]:
    """Keep what pins or kept units read; units of unkept groups go. A layer left without
    input keeps one input channel; one left without units keeps one, unless it can go whole."""
    slots = state.slots
    state.reasons, state.representative = _reasons(slots, state.rows, state.extra_pins)
    new_rows = {node: torch.tensor([slots.union.find(s) in state.reasons
                                    for s in slots.values[node].ids], dtype=torch.bool)
                for node in slots.layers}
    starved = _starved_layers(slots, new_rows, state.reasons)
    for node in starved:
        first = slots.values[node.args[0]].ids[0]  # type: ignore[index]
        state.extra_pins[first] = (f"kept one input channel of {slots.layers[node].name} so "
                                   "it keeps an input (its units are constant)")
    emptied = _emptied_layers(slots, new_rows)
    for node in emptied:
        state.extra_pins[slots.values[node].ids[0]] = (
            f"kept one unit of {slots.layers[node].name}: it cannot be removed whole "
            "(its output is read elsewhere than by a channel concatenation)")
    stable = all(torch.equal(state.rows[n], new_rows[n]) for n in state.rows)
    state.rows = new_rows
    return PassResult(state, bool(starved or emptied or not stable))


def _align_round(state: Deciding) -> PassResult[Deciding]:
    """With ``align`` > 1, every layer keeps a multiple of ``align`` units (or all of them),
    by keeping removable units as well: CPU kernels work on channel blocks (8 or 16 wide),
    and a layer just short of a block boundary pays for the whole block anyway."""
    if state.align == 1:
        return PassResult(state, False)
    aligned = _aligned(state.slots, state.rows, state.reasons, state.align)
    state.extra_pins.update(aligned)
    return PassResult(state, bool(aligned))


DECIDE = Pass("decide", _decide_round)
ALIGN = Pass("align", _align_round)


def decide(slots: SlotGraph, align: int = 1) -> Decision:
    """The decide and align passes repeated to a fixed point."""
    rows = {node: torch.ones(layer.out_units, dtype=torch.bool)
            for node, layer in slots.layers.items()}
    state = fixed_point([DECIDE, ALIGN], Deciding(slots, align, rows)).state
    return Decision(state.reasons, state.rows, state.representative)


def _reasons(slots: SlotGraph, rows: dict[fx.Node, torch.Tensor], extra_pins: dict[int, str]
             ) -> tuple[dict[int, str], dict[fx.Node, int]]:
    """Why each kept group is kept; for padded convs, the constant channel kept for them.

    Constant channels seen through zero padding all have the shape of the same indicator map,
    so a padded conv needs only one of them: W[:, rep] += sum_c (v_c / v_rep) W[:, c].
    """
    find = slots.union.find
    reasons: dict[int, str] = {}
    representative: dict[fx.Node, int] = {}
    for slot, why in [*slots.pins.items(), *extra_pins.items()]:
        reasons.setdefault(find(slot), why)
    for node, layer in slots.layers.items():
        source = slots.values[node.args[0]]  # type: ignore[index]
        reads = layer.reads(rows[node])
        for channel in torch.nonzero(reads & source.live).flatten():
            reasons.setdefault(find(source.ids[channel]), f"read by {layer.name}")
        if not layer.padded:
            continue
        border = reads & ~source.live & (source.value != 0)
        if not border.any():
            continue
        if layer.groups == 1:
            strongest = int(torch.where(border, source.value.abs(), -1.0).argmax())
            representative[node] = strongest
            border = torch.zeros_like(border)
            border[strongest] = True
        for channel in torch.nonzero(border).flatten():
            reasons.setdefault(find(source.ids[channel]),
                               f"constant read by {layer.name}, whose zero padding makes it "
                               "vary at the borders")
    _partial_add_reads(slots, reasons)
    return reasons, representative


def _partial_add_reads(slots: SlotGraph, reasons: dict[int, str]) -> None:
    """A partial add reads a live branch channel when the sum's channel is kept; a branch
    keeps at least one unit (a layer cannot have none)."""
    find = slots.union.find
    for partial in slots.partial_adds:
        out, branch = slots.values[partial.node], slots.values[partial.branch]
        read = [c for c in range(out.width)
                if find(out.ids[c]) in reasons and branch.live[c]]
        for channel in read or [0]:
            reasons.setdefault(find(branch.ids[channel]), f"added by {partial.node.name}")


def _aligned(slots: SlotGraph, rows: dict[fx.Node, torch.Tensor], reasons: dict[int, str],
             align: int) -> dict[int, str]:
    """Slots to keep so that each layer keeps a multiple of ``align`` units."""
    extra: dict[int, str] = {}
    for node, layer in slots.layers.items():
        kept = int(rows[node].sum())
        short = -kept % align
        if short == 0 or kept + short > layer.out_units:
            continue
        ids = slots.values[node].ids
        for slot in [ids[j] for j in torch.nonzero(~rows[node]).flatten().tolist()][:short]:
            if slots.union.find(slot) not in reasons:
                extra[slot] = f"{ALIGN_REASON} {layer.name} to {align} units"
    return extra


def _starved_layers(slots: SlotGraph, rows: dict[fx.Node, torch.Tensor],
                    reasons: dict[int, str]) -> list[fx.Node]:
    """Layers that keep units but would keep no input channel at all."""
    starved = []
    for node in slots.layers:
        ids = slots.values[node.args[0]].ids  # type: ignore[index]
        if rows[node].any() and ids and not any(slots.union.find(s) in reasons for s in ids):
            starved.append(node)
    return starved


def _emptied_layers(slots: SlotGraph, rows: dict[fx.Node, torch.Tensor]) -> list[fx.Node]:
    """Layers left with no unit whose output cannot simply disappear: only a layer whose
    channels reach nothing but channel concatenations (through per-channel operations) is
    removed whole, with its part of the concatenation."""
    return [node for node, kept in rows.items()
            if kept.numel() and not kept.any() and not _only_concatenated(slots, node)]


def _only_concatenated(slots: SlotGraph, node: fx.Node) -> bool:
    ids = slots.values[node].ids
    for user in node.users:
        value = slots.values.get(user)
        if any(edit.node is user and edit.kind == "cat" for edit in slots.edits):
            continue
        if value is None or value.ids != ids or not _only_concatenated(slots, user):
            return False
    return True
