"""The channel interpreter: how channels (features) flow through a traced graph, op by op,
read by pruning (which units are read) and by compaction (which channels can go)."""

from .slots import SlotGraph, Slots, build, read_units

__all__ = ["SlotGraph", "Slots", "build", "read_units"]
