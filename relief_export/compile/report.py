"""What compaction did, per layer and in total: a dataclass printable as a table and as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..table import format_table

ALIGN_REASON = "kept to align"
UNCOMPACTED = "left uncompacted:"


@dataclass
class LayerChange:
    """One layer: weight shape, units removed by cause, parameters and MACs, kept oddities."""

    name: str
    shape_before: list[int]
    shape_after: list[int]
    removed_unread: int = 0
    removed_zero: int = 0
    removed_constant_folded: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    kept_constant: int = 0
    kept_to_align: int = 0
    kept_reasons: list[str] = field(default_factory=list)


@dataclass
class CompactionReport:
    """Totals and per-layer changes; ``notes`` lists fallbacks and choices (input crop, ...)."""

    layers: list[LayerChange] = field(default_factory=list)
    input_features_dropped: int = 0
    batchnorm_folded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_relative_error: float = 0.0
    captured: str = "torch.fx"  # or "torch.export" (see relief_export.inputs.capture)
    left_whole: list[dict[str, str]] = field(default_factory=list)  # {node, op, why}

    @property
    def params_before(self) -> int:
        return sum(layer.params_before for layer in self.layers)

    @property
    def params_after(self) -> int:
        return sum(layer.params_after for layer in self.layers)

    @property
    def macs_before(self) -> int:
        return sum(layer.macs_before for layer in self.layers)

    @property
    def macs_after(self) -> int:
        return sum(layer.macs_after for layer in self.layers)

    @property
    def dead_units_kept(self) -> int:
        """Constant (dead) units still in the model for any reason but ``align``."""
        return sum(layer.kept_constant - layer.kept_to_align for layer in self.layers)

    @property
    def uncompacted(self) -> list[str]:
        """Regions left whole, each with its reason."""
        return [note[len(UNCOMPACTED):].strip() for note in self.notes
                if note.startswith(UNCOMPACTED)]

    @property
    def changed(self) -> bool:
        return self.params_after != self.params_before or self.input_features_dropped > 0 \
            or bool(self.batchnorm_folded)

    def to_dict(self) -> dict:
        return {**asdict(self), "params_before": self.params_before,
                "params_after": self.params_after, "macs_before": self.macs_before,
                "macs_after": self.macs_after, "changed": self.changed,
                "dead_units_kept": self.dead_units_kept, "uncompacted": self.uncompacted}

    def __str__(self) -> str:
        rows = [[c.name, "x".join(map(str, c.shape_before)), "x".join(map(str, c.shape_after)),
                 c.removed_unread, c.removed_constant_folded + c.removed_zero,
                 c.params_before, c.params_after, c.macs_before, c.macs_after]
                for c in self.layers]
        rows.append(["total", "", "", sum(c.removed_unread for c in self.layers),
                     sum(c.removed_constant_folded + c.removed_zero for c in self.layers),
                     self.params_before, self.params_after, self.macs_before, self.macs_after])
        text = format_table(["layer", "before", "after", "unread", "constant", "params before",
                             "params after", "MACs before", "MACs after"], rows)
        extra = [f"captured with {self.captured}"]
        if self.input_features_dropped:
            extra.append(f"input features cropped away: {self.input_features_dropped}")
        if self.batchnorm_folded:
            extra.append(f"BatchNorm folded into the layer before it: "
                         f"{len(self.batchnorm_folded)}")
        kept = [f"{c.name}: {why}" for c in self.layers for why in c.kept_reasons]
        return "\n".join([text, *extra, *self.notes, *kept])
