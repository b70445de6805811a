"""README is the front door: its exit-code table and its flag lists must match the code."""
from __future__ import annotations

import re

from conftest import REPO
from internvl_cli.errors import ExitCode
from internvl_cli.flags import Flag


def test_exit_code_table_matches_the_enum():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", readme, flags=re.MULTILINE))
    assert rows == {str(int(code)): code.name for code in ExitCode}


def test_ci_runs_readme_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    for command in ('pip install -e ".[dev]"', "pytest -q"):
        assert command in readme and command in ci


def _ticked(text: str) -> set[str]:
    """The flag-shaped `names` in a piece of README text (options such as `--max-tiles` are not flags)."""
    return set(re.findall(r"`([a-z]+(?:-[a-z]+)*)`", text))


def test_readme_flag_lists_match_the_enum():
    """Every flag is documented where its records are described, and nothing documented there does not exist."""
    readme = " ".join((REPO / "README.md").read_text().split())  # lines joined: sentences wrap anywhere
    ocr = readme.split("`flags` lists what to check:", 1)[1].split("A document fails", 1)[0]
    chart = re.search(r"`flags` \(as for OCR, plus ([^)]*)\)", readme).group(1)
    extract = re.search(r"`flags` \(([^)]*), page flags\)", readme).group(1)
    documented = _ticked(ocr) | _ticked(chart) | _ticked(extract)
    assert documented == {flag.value for flag in Flag}


def test_readme_names_no_flag_that_does_not_exist():
    readme = " ".join((REPO / "README.md").read_text().split())
    named = set(re.findall(r"flag(?:ged)? `([^`]+)`", readme)) | set(re.findall(r'"flags": \[([^\]]*)\]', readme))
    named = {name.strip().strip('"') for entry in named for name in entry.split(",") if name.strip()}
    assert named and named <= {flag.value for flag in Flag}, named - {flag.value for flag in Flag}
