"""Shared fixtures: tiny InternVL checkpoints built offline once per session, and a CLI driver."""
from __future__ import annotations

import json
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


def make_inbox(folder: Path, count: int) -> Path:
    """A new folder of `count` chart images, each with distinct contents (the ledger keys documents by content)."""
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"doc{i:02d}.png").write_bytes((SAMPLES / "chart.png").read_bytes() + bytes([i]))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_native

    return build_tiny_native(tmp_path_factory.mktemp("ckpt") / "tiny-internvl")


@pytest.fixture(scope="module")
def engine(tiny_model):
    """The tiny checkpoint loaded once per module on the CPU, for tests that drive the core directly."""
    import torch

    from internvl_cli.engine import load_engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 0.2M-parameter model gains nothing from threads; busy runners lose a lot
    engine = load_engine(str(tiny_model), device="cpu")
    engine.load()
    yield engine
    torch.set_num_threads(threads)


class ListSink:
    """A run's sink that keeps what it is given: the records emitted and the failures."""

    def __init__(self):
        self.records, self.failures = [], []

    def emit(self, path, result, rendered):
        self.records.append(json.loads(rendered))

    def fail(self, path, error):
        self.failures.append(error)


@pytest.fixture()
def cli():
    """Runs `internvl ARGS...` in-process like a user would; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from internvl_cli.cli import app

    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(app, [str(a) for a in args], input=input)
        return result.exit_code, result.stdout, result.stderr

    return invoke
