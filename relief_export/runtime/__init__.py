"""Running models for checks and timing: onnxruntime sessions (``ort``) and seeded random
inputs shaped like the examples (``seeded``)."""
