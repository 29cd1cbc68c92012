"""Exceptions that the command line turns into one clear line and an exit code."""

import re

_COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*m")


class ReliefError(Exception):
    """Bad input from the user (a file, a shape, an option): exit code 2."""

    exit_code = 2


class VerificationError(ReliefError):
    """The exported model does not compute what the torch model computes: exit code 1."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty),
    without terminal colour codes."""
    text = _COLOUR_CODES.sub("", str(error)).strip()
    return (text.splitlines() or [type(error).__name__])[0]
