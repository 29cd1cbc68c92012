"""Integrity of exported ONNX files: a sha256 over the weights, recorded in metadata_props
(``weights_sha256``, beside the source checkpoint's ``source_sha256``) and checked by
``relief-export inspect OUT.onnx``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import onnx
import onnx_ir as ir

WEIGHTS_KEY, SOURCE_KEY = "weights_sha256", "source_sha256"


def weights_sha256(model: onnx.ModelProto | ir.Model) -> str:
    """sha256 over every initializer in name order, each as its deterministic protobuf
    serialisation (name, type, dims and data); the same for a file and for the ``onnx_ir``
    model it was written from."""
    digest = hashlib.sha256()
    for tensor in sorted(_initializers(model), key=lambda t: _name_bytes(t.name)):
        digest.update(tensor.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _name_bytes(name: str | bytes) -> bytes:
    """A name as bytes: protobuf hands back ``bytes`` for a string field that is not valid
    UTF-8 (a damaged file), ``str`` otherwise."""
    return name if isinstance(name, bytes) else name.encode()


def _initializers(model: onnx.ModelProto | ir.Model) -> list[onnx.TensorProto]:
    if isinstance(model, onnx.ModelProto):
        return list(model.graph.initializer)
    protos = []
    for value in model.graph.initializers.values():
        assert value.const_value is not None
        proto = ir.serde.serialize_tensor(value.const_value)
        proto.name = str(value.name)
        protos.append(proto)
    return protos


@dataclass(frozen=True)
class IntegrityCheck:
    """What the file records and what its weights hash to now."""

    recorded: str | None
    actual: str
    source: str | None

    @property
    def status(self) -> str:
        if not self.recorded:
            return "no checksum recorded (not written by relief_export)"
        return "ok" if self.recorded == self.actual else "MISMATCH: the weights were changed"


def check_integrity(model: onnx.ModelProto) -> IntegrityCheck:
    props = {p.key: p.value for p in model.metadata_props}
    return IntegrityCheck(props.get(WEIGHTS_KEY) or None, weights_sha256(model),
                          props.get(SOURCE_KEY) or None)
