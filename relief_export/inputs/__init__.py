"""Every way a model comes in, one module each: our checkpoints (``checkpoint``), state_dicts
with their architecture (``torch_file``, ``arch``), torch.export archives (``pt2``, with the
ATen layer lifter ``lift_aten``), ONNX models (``onnx_graph``, ``onnx_ops``), trusted pickles
and the safe unpickler (``safe_torch``), Hugging Face folders (``hf_folder``), model files
embedded in checkpoints (``embedded``), and capture of a module as a graph by torch.fx or
torch.export (``capture``). ``load_model`` / ``read_model`` (``load``) dispatch through one
table of file kinds."""

from .checkpoint import save_checkpoint, tensor_sha256
from .load import READERS, architecture_of, load_model, read_model
from .loaded import LoadedModel, ReadOptions, file_sha256

__all__ = ["READERS", "LoadedModel", "ReadOptions", "architecture_of", "file_sha256",
           "load_model", "read_model", "save_checkpoint", "tensor_sha256"]
