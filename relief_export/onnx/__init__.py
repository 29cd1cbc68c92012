"""The ONNX stage: emit (torch.onnx), passes over onnx_ir (weight encoding, metadata, IR
version), the weight formats, verification and integrity. It sees modules and files only;
``relief_export.pipeline`` composes it with the other stages."""
