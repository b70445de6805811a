"""README is the front door: its exit-code table must match the code."""
from __future__ import annotations

import re

from conftest import REPO
from internvl_cli.errors import ExitCode


def test_exit_code_table_matches_the_enum():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", readme, flags=re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in ExitCode}


def test_ci_runs_readme_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for command in ('pip install -e ".[dev]"', "pytest -q"):
        assert command in readme and command in ci
