"""The channel rules, one module per op family; importing this package fills the channel
table (``channels/table.py``). To teach a new operation, add its rule to the family it belongs
to (or a new module listed here) with ``@rule(...)``."""

from . import attention, kept_whole, layers, movement, per_channel, slicing, spatial, two_value

__all__ = ["attention", "kept_whole", "layers", "movement", "per_channel", "slicing", "spatial",
           "two_value"]
