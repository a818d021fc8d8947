"""Usage errors and the argument types every ``tdvsm`` subcommand shares.

A bad option or file raises ``UsageError``; the ``tdvsm`` dispatcher prints it as one line on
stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("Parser", "UsageError", "int_at_least", "non_negative_int", "positive_float", "positive_int")


class UsageError(Exception):
    """Raised for a bad option or file; ``tdvsm`` prints it as one line and exits with 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and raise ``UsageError``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else one clear error line."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            msg = f"expected an integer >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return convert


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        msg = f"expected a positive number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value
