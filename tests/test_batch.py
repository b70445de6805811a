"""Runs over directories with -o: resume, nothing done twice, nothing lost, driven through the real CLI."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import awkward
from conftest import SAMPLES, make_inbox
from internvl_cli.errors import ExitCode


@pytest.fixture()
def inbox(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    shutil.copy(SAMPLES / "chart.png", folder / "a" / "invoice.png")
    shutil.copy(SAMPLES / "receipt.jpg", folder / "b" / "invoice.png")  # same name, other folder: no collision
    shutil.copy(SAMPLES / "invoice.pdf", folder / "invoice.pdf")
    (folder / "notes.txt").write_text("not a document")
    return folder


def outputs(out: Path) -> list[str]:
    """Finished output files; a temp file being written is not one (a signal may still remove it)."""
    from internvl_cli.runs.outputs import is_temp_name

    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and ".internvl" not in p.parts and not is_temp_name(p.name))


def ledger_rows(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        return sorted(db.execute("SELECT source_path, status FROM jobs").fetchall())


def test_directory_run_then_rerun_does_nothing(cli, tiny_model, inbox, tmp_path):
    out = tmp_path / "out"
    args = ("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert stdout == ""  # with -o nothing goes to stdout
    assert outputs(out) == ["a/invoice.png.md", "b/invoice.png.md", "invoice.pdf.md"]
    assert "notes.txt" in err  # unsupported files found by walking are noted, not errors
    first = {p: (out / p).stat().st_mtime_ns for p in outputs(out)}
    code, _, err = cli(*args)
    assert code == 0 and "3 documents already done" in err
    assert {p: (out / p).stat().st_mtime_ns for p in outputs(out)} == first
    code, stdout, _ = cli("status", out, "--json")
    assert json.loads(stdout)["done"] == 3


def test_each_document_is_opened_once_before_its_first_token(cli, tiny_model, inbox, tmp_path, monkeypatch):
    """The check before the model loads opens every document; the run's units use that open document."""
    from internvl_cli.tasks import base

    opened, real = [], base.open_pages
    monkeypatch.setattr(base, "open_pages", lambda path, **kw: opened.append(Path(path).name) or real(path, **kw))
    code, _, err = cli("ocr", inbox, "-o", tmp_path / "out", "--model", tiny_model, "--max-new-tokens", "2")
    assert code == 0, err
    assert sorted(opened) == ["invoice.pdf", "invoice.png", "invoice.png"]


def test_changed_schema_reruns_only_that_task(cli, tiny_model, inbox, tmp_path):
    out = tmp_path / "out"
    schema = tmp_path / "kind.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"kind": {"enum": ["a", "b"]}},
                                  "required": ["kind"], "additionalProperties": False}))
    ocr = ("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    extract = ("extract", inbox, "-o", out, "--schema", schema, "--model", tiny_model, "--max-new-tokens", "30")
    assert cli(*ocr)[0] == 0
    assert cli(*extract)[0] == 0
    schema.write_text(json.dumps({"type": "object", "properties": {"kind": {"enum": ["a", "b", "c"]}},
                                  "required": ["kind"], "additionalProperties": False}))
    code, _, err = cli(*extract)
    assert code == 0 and "already done" not in err  # the extract task changed: redone
    code, _, err = cli(*ocr)
    assert code == 0 and "3 documents already done" in err  # the ocr task did not


def test_moved_file_is_recognised_by_content(cli, tiny_model, inbox, tmp_path):
    out = tmp_path / "out"
    args = ("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    assert cli(*args)[0] == 0
    (inbox / "a" / "invoice.png").rename(inbox / "a" / "renamed.png")
    code, _, err = cli(*args)
    assert code == 0 and "3 documents already done" in err


def test_corrupt_file_fails_alone_and_retry_failed(cli, tiny_model, inbox, tmp_path):
    out = tmp_path / "out"
    awkward.make_truncated_pdf(inbox)
    args = ("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    code, _, err = cli(*args)
    assert code == ExitCode.PARTIAL and err.count("internvl: error:") == 1
    assert len(outputs(out)) == 3
    code, stdout, _ = cli("status", out)
    assert "failed: 1" in stdout and "truncated.pdf" in stdout
    code, _, err = cli(*args, "--retry-failed")
    assert code == ExitCode.INPUT_FILE and "3 documents already done" in err


def test_stdin_path_list(cli, tiny_model, tmp_path):
    listing = f"{SAMPLES / 'chart.png'}\n{SAMPLES / 'receipt.jpg'}\n"
    code, stdout, err = cli("ocr", "-", "--model", tiny_model, "--max-new-tokens", "4", input=listing)
    assert code == 0, err
    assert [json.loads(line)["file"].split("/")[-1] for line in stdout.splitlines()] == ["chart.png", "receipt.jpg"]


def test_busy_output_directory(cli, tiny_model, inbox, tmp_path):
    from internvl_cli.runs.ledger import RunLock

    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out):
        code, _, err = cli("ocr", inbox, "-o", out, "--model", tiny_model)
    assert code == ExitCode.BUSY and "--wait" in err


def start_until_first_output(args: list[str], out: Path, env: dict) -> subprocess.Popen:
    """Starts a run and returns once its first document's output exists (or the run ended)."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not outputs(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for a condition, not timing: we wait until the first output exists
    return proc


def _internvl(*args) -> list[str]:
    return [sys.executable, "-m", "internvl_cli.cli", *map(str, args)]


def test_sigkill_mid_run_then_resume_gives_exactly_one_output_each(tiny_model, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(12):
        shutil.copy(SAMPLES / ("chart.png" if i % 2 else "receipt.jpg"), inbox / f"doc{i:02d}.{'png' if i % 2 else 'jpg'}")
        (inbox / f"doc{i:02d}.{'png' if i % 2 else 'jpg'}").write_bytes(
            (inbox / f"doc{i:02d}.{'png' if i % 2 else 'jpg'}").read_bytes() + bytes([i]))  # distinct contents
    out = tmp_path / "out"
    args = _internvl("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--batch-size", "1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = start_until_first_output(args, out, env)
    proc.kill()
    proc.wait()
    done_before = len(outputs(out))
    assert done_before < 12, "the run finished before it could be killed; use more documents"
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert outputs(out) == [f"doc{i:02d}.{'png' if i % 2 else 'jpg'}.md" for i in range(12)]
    assert [status for _, status in ledger_rows(out)] == ["done"] * 12
    assert not [p for p in out.rglob("*.tmp-*")]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, ExitCode.TERMINATED), (signal.SIGINT, ExitCode.INTERRUPTED)])
def test_signals_stop_cleanly_and_the_rerun_completes(tiny_model, tmp_path, signum, code):
    inbox = make_inbox(tmp_path / "inbox", 24)
    out = tmp_path / "out"
    args = _internvl("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--batch-size", "1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = start_until_first_output(args, out, env)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    rows = ledger_rows(out)
    assert all(status in ("done", "running") for _, status in rows)
    assert 0 < len(outputs(out)) == sum(1 for _, s in rows if s == "done") < 24
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert len(outputs(out)) == 24 and [s for _, s in ledger_rows(out)] == ["done"] * 24


def test_rerun_with_nothing_to_do_never_loads_the_model(cli, tiny_model, inbox, tmp_path):
    out = tmp_path / "out"
    args = ("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    assert cli(*args)[0] == 0
    code, _, err = cli(*args)
    assert code == 0 and "loading model" not in err  # a cron rerun over a done directory costs no GPU time


def test_two_concurrent_runs_leave_a_consistent_ledger(tiny_model, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(6):
        (inbox / f"doc{i}.png").write_bytes((SAMPLES / "chart.png").read_bytes() + bytes([i]))
    out = tmp_path / "out"
    args = _internvl("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--wait")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    second = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    assert outputs(out) == [f"doc{i}.png.md" for i in range(6)]
    assert [status for _, status in ledger_rows(out)] == ["done"] * 6
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT max(attempts) FROM jobs").fetchone() == (1,)  # nothing was done twice
