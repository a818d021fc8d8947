"""The built distribution carries every package and module of the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

from tests.test_readme import ROOT

if TYPE_CHECKING:
    from pathlib import Path


def _clean_copy(destination: Path) -> Path:
    """The tracked files only: build leftovers (build/, *.egg-info) can hide a packaging bug."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    """A non-editable install must not lose a subpackage (runtime.workloads once went missing)."""
    source = _clean_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("tdvsm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = {
        path.relative_to(source).as_posix()
        for package in ("protocol", "actors", "runtime")
        for path in (source / package).rglob("*")
        if path.suffix == ".py" or path.name == "py.typed" or ("static" in path.parts and path.is_file())
    }
    assert expected
    assert expected - shipped == set()
