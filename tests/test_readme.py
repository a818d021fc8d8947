"""The README's promises: two set-up commands, CI running the second verbatim, a working example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_two_commands() -> None:
    """The first code block holds exactly two commands: the main job, then the tests."""
    first = README.index("```")
    assert README[:first].strip() == "# tdvsm"
    commands = _blocks("sh")[0].strip().splitlines()
    assert commands == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:")[1].split("\n\n")[0]
    test = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "pip install -q -e ." in run
    assert "tdvsm run" in run
    assert "pip install -q -e '.[test]'" in test
    assert "-m pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run contains the README's test command character for character."""
    test_command = _blocks("sh")[0].strip().splitlines()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_python_example_runs() -> None:
    """The Python example of the README runs as written."""
    code = _blocks("python")[0]
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "TdxL2State(" in done.stdout


def test_readme_annotates_the_table_tdvsm_prints() -> None:
    """The annotated sample's header lines are exactly what the table renders today, and every
    note [n] it marks is explained below it."""
    import anyio

    from runtime.lab.costs import CostModel
    from runtime.lab.experiment import ExperimentOptions, run_experiment
    from runtime.lab.report import build_report
    from runtime.lab.tables import render_table
    from runtime.lab.workloads import resolve

    sample = README.split("**Reading the table.**", 1)[1]
    block = sample.split("```text\n", 1)[1].split("```", 1)[0]
    options = ExperimentOptions(
        partitions=2,
        vps=2,
        workload="mixed",
        mix=resolve("mixed"),
        duration=None,
        ops=40,
        drivers=2,
        rate=None,
        backend="asyncio",
        clock="real",
        commit_policy="batched",
        seed=1,
        trace_vps=0,
    )
    table = render_table(build_report([anyio.run(run_experiment, options, CostModel())], CostModel()))
    headers = [
        line for line in table.splitlines() if line.startswith(("  action ", "  operation (workload)"))
    ]
    sample_lines = [line.split("   [")[0].rstrip() for line in block.splitlines()]
    for header in headers:
        assert header.rstrip() in sample_lines
    assert table.splitlines()[-1] in block
    notes = re.findall(r"\[(\d)\]", block)
    assert notes == sorted(notes, key=int)
    after = sample.split("```", 2)[2]
    for note in set(notes):
        assert f"\n{note}. " in after
