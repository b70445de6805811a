"""Unit tests of the resume step: hashing, rerun rules, migrations, concurrent writers and the run lock."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from internvl_cli.runs import ledger as ledger_mod
from internvl_cli.errors import BusyError, ExitCode, InputFileError, UsageError
from internvl_cli.runs.ledger import Ledger, RunLock, content_hash, task_hash
from internvl_cli.runs.outputs import STATE_DIR_NAME

CTX = multiprocessing.get_context("fork")
TASK = task_hash({"model": "OpenGVLab/InternVL3-1B-hf", "revision": "abc", "prompt": "ocr", "max_tiles": 12})


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def led(out: Path):
    with Ledger.open(out) as opened:
        yield opened


def finish(led: Ledger, out: Path, content: str, name: str = "x.pdf.md", task: str = TASK,
           source: str = "in/x.pdf") -> Path:
    """Run one job to done the way the runner does: running, write the output, then done."""
    target = out / name
    led.mark_running(content, task, source=source, output_path=target, run_id="r1")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    led.mark_done(content, task, output_path=target, pages=2, seconds=0.5)
    return target


def fail(led: Ledger, out: Path, content: str, error: BaseException, name: str = "bad.pdf.md") -> None:
    led.mark_running(content, TASK, source=f"in/{name}", output_path=out / name, run_id="r1")
    led.mark_failed(content, TASK, error=error, seconds=0.1)


# -- hashing ------------------------------------------------------------------------------------


def test_content_hash_streams_file_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "f.pdf").write_bytes(data)
    assert content_hash(tmp_path / "f.pdf") == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputFileError) as info:
        content_hash(tmp_path / "missing.pdf")
    assert info.value.exit_code == ExitCode.INPUT_FILE and info.value.message == "file not found"


def test_task_hash_is_canonical() -> None:
    a = task_hash({"prompt": "p", "gen": {"max_new_tokens": 10, "temperature": 0}})
    assert a == task_hash({"gen": {"temperature": 0, "max_new_tokens": 10}, "prompt": "p"})
    assert a != task_hash({"prompt": "p2", "gen": {"max_new_tokens": 10, "temperature": 0}})
    with pytest.raises(ValueError):
        task_hash({"x": float("nan")})
    with pytest.raises(TypeError):
        task_hash({"x": object()})


# -- rerun rules --------------------------------------------------------------------------------


def test_new_done_and_failed(led: Ledger, out: Path) -> None:
    assert led.should_process("new", TASK)
    finish(led, out, "done")
    assert not led.should_process("done", TASK)
    assert led.should_process("done", TASK, force=True)
    assert led.should_process("done", "other-task")  # a different prompt/model is a different job
    fail(led, out, "bad", InputFileError("corrupt PDF", path="in/bad.pdf"))
    assert led.should_process("bad", TASK)
    assert led.decide("bad", TASK).reason == "failed"


def test_retry_failed_only_redoes_failures(led: Ledger, out: Path) -> None:
    finish(led, out, "done")
    fail(led, out, "bad", RuntimeError("boom"))
    led.mark_pending("queued", TASK, source="in/q.pdf", output_path=out / "q.pdf.md")
    assert led.should_process("bad", TASK, retry_failed=True)
    for skipped in ("done", "queued", "brand-new"):
        assert not led.should_process(skipped, TASK, retry_failed=True)
    assert all(led.should_process(c, TASK, force=True, retry_failed=True) for c in ("done", "brand-new"))


def test_changed_content_is_redone_and_supersedes_the_old_output(led: Ledger, out: Path) -> None:
    finish(led, out, "version-1")
    assert led.should_process("version-2", TASK)  # same file, new bytes: a new content hash
    finish(led, out, "version-2")
    assert led.lookup("version-1", TASK).status == "superseded"
    # The output now holds version 2, so version 1 coming back must be redone, not skipped.
    assert led.decide("version-1", TASK).reason == "superseded"
    assert not led.should_process("version-2", TASK)


def test_moved_file_is_recognised_by_content(led: Ledger, out: Path) -> None:
    old_output = finish(led, out, "same-bytes", name="a/x.pdf.md", source="in/a/x.pdf")
    assert not led.should_process("same-bytes", TASK)
    led.mark_seen("same-bytes", TASK, source="in/b/renamed.pdf")
    job = led.lookup("same-bytes", TASK)
    assert job.source_path == "in/b/renamed.pdf" and job.status == "done"
    assert job.output_path == "a/x.pdf.md" and old_output.exists()


def test_done_but_output_deleted_is_redone(led: Ledger, out: Path) -> None:
    finish(led, out, "c").unlink()
    decision = led.decide("c", TASK)
    assert decision.process and "missing" in decision.reason


def test_mark_done_requires_the_output_file(led: Ledger, out: Path) -> None:
    led.mark_running("c", TASK, source="in/x.pdf", output_path=out / "x.pdf.md", run_id="r1")
    with pytest.raises(RuntimeError, match="does not exist"):
        led.mark_done("c", TASK, output_path=out / "x.pdf.md", pages=1, seconds=1.0)
    assert led.lookup("c", TASK).status == "running"
    with pytest.raises(KeyError):
        led.mark_failed("never-started", TASK, error="x")


def test_attempts_and_error_details(led: Ledger, out: Path) -> None:
    fail(led, out, "bad", InputFileError("the file is empty", path="in/bad.pdf"))
    fail(led, out, "bad", InputFileError("the file is empty", path="in/bad.pdf"))
    job = led.lookup("bad", TASK)
    assert job.attempts == 2 and job.error == "in/bad.pdf: the file is empty"
    assert job.error_class == "InputFileError" and job.exit_code == ExitCode.INPUT_FILE
    led.mark_running("bad", TASK, source="in/bad.pdf", output_path=out / "bad.pdf.md", run_id="r2")
    assert led.lookup("bad", TASK).error is None  # a new attempt clears the old result


def test_paths_stored_relative_and_undecodable_names_survive(led: Ledger, out: Path) -> None:
    finish(led, out, "c", name="sub/x.pdf.md", source="in/caf\udce9.pdf")
    job = led.lookup("c", TASK)
    assert job.output_path == "sub/x.pdf.md" and job.source_path == "in/caf\\xe9.pdf"
    with pytest.raises(ValueError):
        led.mark_running("d", TASK, source="x", output_path=out.parent / "elsewhere.md", run_id="r")


# -- interrupted runs and summary ---------------------------------------------------------------


def test_interrupted_rows_count_as_not_done(out: Path) -> None:
    with Ledger.open(out) as led:
        finish(led, out, "ok")
        led.mark_running("killed", TASK, source="in/k.pdf", output_path=out / "k.pdf.md", run_id="r1")
    with Ledger.open(out, create=False) as led:  # the run died here; a new one opens the ledger
        summary = led.summary()
        assert summary["interrupted"] == 1 and summary["running"] == 0
        assert summary["failures"][0]["interrupted"] and summary["failures"][0]["source"] == "in/k.pdf"
        assert led.should_process("killed", TASK) and led.should_process("killed", TASK, retry_failed=True)
        with RunLock(out):
            assert led.summary()["running"] == 1  # a run holds the lock: it is really running
            assert led.summary()["active_run"]["pid"] == os.getpid()
            assert led.recover_interrupted() == 1
        job = led.lookup("killed", TASK)
        assert job.status == "failed" and job.error_class == "Interrupted"


def test_summary_counts_and_failures_most_recent_first(led: Ledger, out: Path) -> None:
    finish(led, out, "a", name="a.md")
    finish(led, out, "b", name="b.md")
    fail(led, out, "first", InputFileError("corrupt", path="in/first.pdf"), name="first.md")
    fail(led, out, "second", RuntimeError("CUDA error"), name="second.md")
    led.mark_pending("queued", TASK, source="in/q.pdf", output_path=out / "q.md")
    summary = led.summary()
    assert {k: summary[k] for k in ("done", "failed", "pending", "running", "interrupted")} == {
        "done": 2, "failed": 2, "pending": 1, "running": 0, "interrupted": 0}
    assert summary["total"] == 5 and summary["pages"] == 4 and summary["active_run"] is None
    assert [f["error"] for f in summary["failures"]] == ["CUDA error", "in/first.pdf: corrupt"]
    assert summary["failures"][0]["exit_code"] == ExitCode.OTHER_ERROR


def test_status_on_a_folder_without_ledger(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Ledger.open(tmp_path, create=False)
    assert not (tmp_path / STATE_DIR_NAME).exists()


# -- migrations ---------------------------------------------------------------------------------


def _migration_names(out: Path) -> list[str]:
    with sqlite3.connect(out / STATE_DIR_NAME / "ledger.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT name FROM migrations ORDER BY rowid")]


def test_migrations_are_idempotent_and_extendable(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger.open(out) as led:
        finish(led, out, "kept")
    Ledger.open(out).close()
    assert _migration_names(out) == ["m001_jobs"]

    def m002_add_model_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE jobs ADD COLUMN model TEXT")

    monkeypatch.setattr(ledger_mod, "MIGRATIONS", [*ledger_mod.MIGRATIONS, m002_add_model_column])
    for _ in range(2):
        with Ledger.open(out) as led:
            assert led.lookup("kept", TASK).status == "done"
    assert _migration_names(out) == ["m001_jobs", "m002_add_model_column"]
    monkeypatch.undo()
    with pytest.raises(UsageError, match="newer"):  # an older release must not write a newer schema
        Ledger.open(out)


def test_wal_mode(out: Path) -> None:
    with Ledger.open(out) as led:
        assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- concurrency: processes ---------------------------------------------------------------------


def _writer(out: str, prefix: str, count: int, start: Any) -> None:
    start.wait()
    with Ledger.open(out) as led:
        for i in range(count):
            content = f"{prefix}-{i}"
            target = Path(out, prefix, f"{i}.md")
            led.mark_running(content, TASK, source=f"in/{content}.pdf", output_path=target, run_id=prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            led.mark_done(content, TASK, output_path=target, pages=1, seconds=0.0)


def test_concurrent_writers_do_not_corrupt_the_ledger(out: Path) -> None:
    Ledger.open(out).close()
    start = CTX.Event()
    procs = [CTX.Process(target=_writer, args=(str(out), p, 200, start)) for p in ("p1", "p2")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Ledger.open(out) as led:
        assert led._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert led.summary()["done"] == 400
        assert all(led.lookup(f"{p}-{i}", TASK).status == "done" for p in ("p1", "p2") for i in range(200))


def _hold_lock(out: str, acquired: Any, release: Any, released_flag: Any) -> None:
    with RunLock(out):
        acquired.set()
        release.wait(30)
        released_flag.value = 1  # set while still holding: a waiter that sees 0 got in too early


def _wait_for_lock(out: str, waiting: Any, released_flag: Any, seen: Any) -> None:
    with RunLock(out, wait=True, on_wait=lambda who: waiting.set()):
        seen.value = released_flag.value


def test_run_lock_busy_then_wait(out: Path) -> None:
    acquired, release, waiting = CTX.Event(), CTX.Event(), CTX.Event()
    released_flag, seen = CTX.Value("i", 0), CTX.Value("i", -1)
    holder = CTX.Process(target=_hold_lock, args=(str(out), acquired, release, released_flag))
    holder.start()
    try:
        assert acquired.wait(30)
        with pytest.raises(BusyError) as info:
            RunLock(out).acquire()
        assert f"pid {holder.pid}" in info.value.message and info.value.exit_code == ExitCode.BUSY
        assert info.value.path == str(out)
        assert RunLock.holder(out)["pid"] == holder.pid

        waiter = CTX.Process(target=_wait_for_lock, args=(str(out), waiting, released_flag, seen))
        waiter.start()
        assert waiting.wait(30)  # the waiter found the lock taken and is now blocking on it
        release.set()
        waiter.join(30)
        assert waiter.exitcode == 0 and seen.value == 1
    finally:
        release.set()
        holder.join(30)
    assert RunLock.holder(out) is None


def _lock_and_die(out: str, acquired: Any) -> None:
    RunLock(out).acquire()
    acquired.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_run_lock_is_released_when_the_holder_is_killed(out: Path) -> None:
    acquired = CTX.Event()
    proc = CTX.Process(target=_lock_and_die, args=(str(out), acquired))
    proc.start()
    assert acquired.wait(30)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert RunLock.holder(out) is None  # its pid is still in the file, but nobody holds the lock
    with RunLock(out) as lock:  # no BusyError: the kernel dropped the dead process's lock
        assert RunLock.holder(out)["pid"] == os.getpid()
    assert not lock.path.read_bytes()  # released cleanly: no stale holder info


def test_run_lock_status_probe_does_not_make_a_run_busy(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RunLock.holder(out) is None and not out.exists()  # a probe creates nothing
    lock = RunLock(out)
    lock.path.parent.mkdir(parents=True)
    probe = os.open(lock.path, os.O_RDONLY | os.O_CREAT)
    ledger_mod.fcntl.flock(probe, ledger_mod.fcntl.LOCK_SH)  # `internvl status` caught mid-probe

    def probe_finishes(seconds: float) -> None:
        os.close(probe)

    monkeypatch.setattr(ledger_mod.time, "sleep", probe_finishes)
    with lock:
        with pytest.raises(RuntimeError, match="re-entrant"):
            lock.acquire()
