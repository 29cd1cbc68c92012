"""Benchmarks of dense vs pruned ONNX models, and NNrelief-like masks for models without data."""
