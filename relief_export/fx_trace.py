"""torch.fx tracing shared by pruning and compaction."""

from __future__ import annotations

from torch import fx, nn

from .errors import ReliefError, first_line


def trace(model: nn.Module, purpose: str) -> fx.GraphModule:
    """A trace sharing ``model``'s submodules and parameters; buffers become get_attr nodes
    (not copies), so gates can be read and sliced. ``purpose`` names who needs it in errors."""
    tracer = fx.Tracer()
    tracer.proxy_buffer_attributes = True
    try:
        graph = tracer.trace(model)
    except Exception as error:
        raise ReliefError(f"cannot capture {type(model).__name__} with torch.fx "
                          f"({first_line(error)}); {purpose} needs a forward without "
                          "data-dependent control flow") from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
