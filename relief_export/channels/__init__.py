"""The channel interpreter: how channels (features) flow through a traced graph, op by op,
read by pruning (which units are read) and by compaction (which channels can go)."""

from .builder import build, read_units
from .ops.two_value import PARTIAL_ADD_COST
from .structures import ChannelEdit, SlotGraph, Slots

__all__ = ["PARTIAL_ADD_COST", "ChannelEdit", "SlotGraph", "Slots", "build", "read_units"]
