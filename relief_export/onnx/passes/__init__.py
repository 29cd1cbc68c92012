"""Passes over an ``onnx_ir`` model, each with the contract of ``ir.passes.InPlacePass``
(``call(model) -> PassResult(model, modified)``), composed by ``ir.passes.PassManager``."""

from .cap_ir_version import CapIrVersion
from .drop_identity_mul import DropIdentityMul
from .encode_weights import EncodeWeights, TensorChoice
from .set_metadata import SetMetadata
from .slim_graph import ClearValueInfo, DropZeroBiasZeroPoints
from .sparse_compute import LayerCompute, SparseCompute

__all__ = ["CapIrVersion", "ClearValueInfo", "DropIdentityMul", "DropZeroBiasZeroPoints",
           "EncodeWeights", "LayerCompute", "SetMetadata", "SparseCompute", "TensorChoice"]
