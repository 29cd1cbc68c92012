"""Data spec text: ``KIND[:ARGUMENT][?key=value&key=value]``. The options after ``?`` are what
the command line's ``--image-size``, ``--normalize``, ``--text-column``, ``--label-column``,
``--tokenizer`` and ``--max-length`` add, so one string names a data set everywhere (the
command line, the Python API, a checkpoint's ``data`` field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ReliefError


@dataclass(frozen=True)
class Spec:
    """A parsed spec; ``options`` maps option names to their text."""

    kind: str
    argument: str
    options: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        head = f"{self.kind}:{self.argument}" if self.argument else self.kind
        tail = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{head}?{tail}" if tail else head


def parse(spec: str) -> Spec:
    head, _, tail = spec.partition("?")
    kind, _, argument = head.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, tail.split("&")):
        key, equals, value = item.partition("=")
        if not equals or not key or not value:
            raise ReliefError(f"data spec {spec!r}: option {item!r} must look like key=value")
        if key in options:
            raise ReliefError(f"data spec {spec!r}: option {key!r} is given twice")
        options[key] = value
    return Spec(kind, argument, options)


def with_options(spec: str, **options: Any) -> str:
    """``spec`` with the options that are not None added (an option already there is
    refused: it would be ambiguous which one holds)."""
    parsed = parse(spec)
    given = {k: _text(v) for k, v in options.items() if v is not None}
    for key in given:
        if key in parsed.options:
            raise ReliefError(f"data spec {spec!r} already sets {key}; drop one of them")
    return Spec(parsed.kind, parsed.argument, {**parsed.options, **given}).text()


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def take(spec: Spec, allowed: dict[str, str]) -> dict[str, str]:
    """The spec's options, refusing any that the kind does not take; ``allowed`` maps each
    option to its default."""
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise ReliefError(f"data spec {spec.text()!r}: {spec.kind} does not take option(s) "
                          f"{', '.join(unknown)} (it takes: {names})")
    return {**allowed, **spec.options}
