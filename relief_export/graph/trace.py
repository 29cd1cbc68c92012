"""torch.fx tracing shared by pruning and compaction."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from torch import fx, nn

from ..errors import ReliefError, first_line


def trace(model: nn.Module, purpose: str) -> fx.GraphModule:
    """A trace sharing ``model``'s submodules and parameters; buffers become get_attr nodes
    (not copies), so gates can be read and sliced. ``purpose`` names who needs it in errors."""
    tracer = fx.Tracer()
    tracer.proxy_buffer_attributes = True
    try:
        graph = tracer.trace(model)
    except Exception as error:
        raise ReliefError(f"cannot capture {type(model).__name__} with torch.fx "
                          f"({type(error).__name__}: {first_line(error)}); {purpose} needs "
                          "a forward that torch.fx can trace") from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


@contextlib.contextmanager
def quiet_interpreter() -> Iterator[None]:
    """torch.fx's ShapeProp prints a traceback before it re-raises; keep it off the terminal
    (the error itself becomes one line, see ``root_cause``)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (ShapeProp wraps the real one)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error
