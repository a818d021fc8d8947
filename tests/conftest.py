"""Shared fixtures: every async test runs on asyncio and on trio; reports kept for the summary."""

from __future__ import annotations

import pytest

#: Sections a test asks to show at the end of the run, whatever the capture mode (title, text).
SUMMARIES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def summary_section(request: pytest.FixtureRequest) -> object:
    """``summary_section(title, text)`` shows ``text`` in the run's terminal summary."""
    sections = request.config.stash.setdefault(SUMMARIES, [])

    def add(title: str, text: str) -> None:
        sections.append((title, text))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Show the sections tests added (the CI campaign's fault and sometimes counts)."""
    for title, text in config.stash.get(SUMMARIES, []):
        terminalreporter.section(title)
        terminalreporter.write_line(text)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each async test once per backend."""
    backend: str = request.param
    return backend
