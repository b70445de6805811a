"""Shared fixtures: tiny InternVL checkpoints built offline once per session, and a CLI driver."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SAMPLES = REPO / "samples"
sys.path.insert(0, str(TESTS))

# Nothing in the suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_native

    return build_tiny_native(tmp_path_factory.mktemp("ckpt") / "tiny-internvl")


@pytest.fixture()
def cli():
    """Runs `internvl ARGS...` in-process like a user would; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from internvl_cli.cli import app

    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(app, [str(a) for a in args], input=input)
        return result.exit_code, result.stdout, result.stderr

    return invoke
