"""NNrelief pruning and the training loop it fine-tunes with."""
