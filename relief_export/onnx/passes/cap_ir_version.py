"""Cap the model's IR version to one the installed onnxruntime loads (onnx may write newer)."""

from __future__ import annotations

import onnx_ir as ir


class CapIrVersion(ir.passes.InPlacePass):
    def __init__(self, maximum: int):
        super().__init__()
        self.maximum = maximum

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = model.ir_version > self.maximum
        model.ir_version = min(model.ir_version, self.maximum)
        return ir.passes.PassResult(model, modified)
