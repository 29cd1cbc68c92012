"""Every way a model comes in, one module each: our checkpoints (``checkpoint``), state_dicts
with their architecture (``torch_file``, ``arch``), torch.export archives (``pt2``, with the
ATen layer lifter ``lift_aten``), ONNX models (``onnx_graph``, ``onnx_ops``), trusted pickles
and the safe unpickler (``safe_torch``), and capture of a module as a graph by torch.fx or
torch.export (``capture``). ``load_model`` / ``read_model`` (``load``) dispatch through one
table of file kinds."""

from .checkpoint import save_checkpoint, tensor_sha256
from .load import READERS, load_model, read_model
from .loaded import LoadedModel, file_sha256

__all__ = ["READERS", "LoadedModel", "file_sha256", "load_model", "read_model",
           "save_checkpoint", "tensor_sha256"]
