"""Output paths of the ``tdvsm`` commands, checked before any work starts.

A run that fails to write its report after ten minutes of load has wasted the ten minutes, so
every ``--report``, ``--plot``, ``--trace`` and ``--hgrm`` path is checked first: the right
extension, not a directory (or, for ``--hgrm``, a directory), and writable (tried, not guessed
from permission bits: root passes those, a read-only file system does not). A bad path raises
``UsageError``, which ``tdvsm`` prints as one line with exit status 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

from .usage import UsageError

__all__ = ("JSON", "PLOT_FORMATS", "check_directory", "check_file")

#: Extensions a JSON output (report, trace) may have.
JSON: Final = (".json",)
#: Formats ``--plot`` writes (matplotlib picks the format from the extension).
PLOT_FORMATS: Final = (".png", ".svg", ".pdf")


def check_file(path: str | None, option: str, suffixes: tuple[str, ...]) -> Path | None:
    """``path`` as a ``Path`` once it is known to be writable with one of ``suffixes``.

    Raises:
        UsageError: the extension is missing or wrong, the path is a directory, its directory
            does not exist, or the file cannot be written (one line naming option and path).
    """
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        msg = f"{option} {path}: is a directory; give a file name ending in {_either(suffixes)}"
        raise UsageError(msg)
    if target.suffix.lower() not in suffixes:
        got = f"extension {target.suffix!r}" if target.suffix else "no extension"
        msg = f"{option} {path}: {got}; the file name must end in {_either(suffixes)}"
        raise UsageError(msg)
    parent = target.resolve().parent
    if not parent.is_dir():
        msg = f"{option} {path}: directory {parent} does not exist"
        raise UsageError(msg)
    _try_write(target, option, path)
    return target


def check_directory(path: str | None, option: str) -> Path | None:
    """``path`` as a directory that exists (created if missing) and takes new files.

    Raises:
        UsageError: the path is a file, its parent does not exist, or nothing can be written
            in it.
    """
    if path is None:
        return None
    target = Path(path)
    if target.exists() and not target.is_dir():
        msg = f"{option} {path}: is a file; give a directory (one file per action type goes there)"
        raise UsageError(msg)
    parent = target.resolve().parent
    if not target.exists():
        if not parent.is_dir():
            msg = f"{option} {path}: directory {parent} does not exist"
            raise UsageError(msg)
        try:
            target.mkdir()
        except OSError as exc:
            msg = f"{option} {path}: cannot create the directory: {exc.strerror or exc}"
            raise UsageError(msg) from None
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        msg = f"{option} {path}: cannot write in the directory: {exc.strerror or exc}"
        raise UsageError(msg) from None
    return target


def _try_write(target: Path, option: str, shown: str) -> None:
    """Open ``target`` for writing without changing it; remove it again if it did not exist."""
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as exc:
        msg = f"{option} {shown}: cannot write the file: {exc.strerror or exc}"
        raise UsageError(msg) from None
    if not existed:
        os.unlink(target)


def _either(suffixes: tuple[str, ...]) -> str:
    return suffixes[0] if len(suffixes) == 1 else ", ".join(suffixes[:-1]) + " or " + suffixes[-1]
