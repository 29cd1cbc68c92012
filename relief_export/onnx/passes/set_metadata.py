"""Set ``metadata_props`` entries (replacing those with the same keys); the entries may be
computed from the model when the pass runs (e.g. a checksum of its final weights)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import onnx_ir as ir

Entries = Mapping[str, str] | Callable[[ir.Model], Mapping[str, str]]


class SetMetadata(ir.passes.InPlacePass):
    def __init__(self, entries: Entries):
        super().__init__()
        self.entries = entries

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        entries = dict(self.entries(model) if callable(self.entries) else self.entries)
        modified = any(model.metadata_props.get(k) != v for k, v in entries.items())
        model.metadata_props.update(entries)
        return ir.passes.PassResult(model, modified)
