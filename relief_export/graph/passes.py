"""Passes with one contract, and the two runners that compaction and pruning use.

A pass is a named callable ``pass_(state) -> PassResult(state, modified, reasons)``; the
``reasons`` are data (what a pass left alone, and why), collected by the runner. ``run`` applies
passes in order once; ``fixed_point`` repeats a sequence until a whole round modifies nothing,
and raises past ``limit`` rounds (a pass that never settles is a bug, not a slow model).
The contract follows onnx_ir's passes (a pass reports whether it modified its input; a
manager runs steps until they stop modifying) and onnxscript's MatchResult (failure reasons
as values, not log lines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")


@dataclass(frozen=True)
class PassResult(Generic[S]):
    state: S
    modified: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pass(Generic[S]):
    """A named step; ``call`` does the work. ``requires`` / ``ensures`` state what must hold
    before and after (a violation is a bug in the pass order or the pass: RuntimeError)."""

    name: str
    call: Callable[[S], PassResult[S]]
    requires: Callable[[S], bool] = lambda state: True
    ensures: Callable[[S], bool] = lambda state: True

    def __call__(self, state: S) -> PassResult[S]:
        if not self.requires(state):
            raise RuntimeError(f"pass {self.name}: its requirements do not hold")
        result = self.call(state)
        if not self.ensures(result.state):
            raise RuntimeError(f"pass {self.name}: its guarantees do not hold")
        return result


@dataclass
class Outcome(Generic[S]):
    """What a runner ends with: the state, the rounds it took and every reason given."""

    state: S
    rounds: int
    reasons: list[str]


def run(passes: Sequence[Pass[S]], state: S) -> Outcome[S]:
    """Each pass once, in order."""
    reasons: list[str] = []
    for step in passes:
        result = step(state)
        state = result.state
        reasons += result.reasons
    return Outcome(state, 1, reasons)


def fixed_point(passes: Sequence[Pass[S]], state: S, limit: int = 10_000) -> Outcome[S]:
    """The sequence repeated until a round in which no pass modifies the state."""
    reasons: list[str] = []
    for rounds in range(1, limit + 1):
        modified = False
        for step in passes:
            result = step(state)
            state, modified = result.state, modified or result.modified
            reasons += result.reasons
        if not modified:
            return Outcome(state, rounds, reasons)
    names = ", ".join(step.name for step in passes)
    raise RuntimeError(f"passes {names} did not settle in {limit} rounds")
