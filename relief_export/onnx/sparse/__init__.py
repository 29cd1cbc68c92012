"""Sparse compute: each sparse layer computed as a few dense blocks (``cover``), chosen per
layer by timing in onnxruntime (``timing``), written as standard ONNX ops (``rewrite``)."""
