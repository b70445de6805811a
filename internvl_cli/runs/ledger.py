"""Resume step: the SQLite ledger of what was done to which content (OUTDIR/.internvl/ledger.sqlite3) and the run lock.

A job is one (content_hash, task_hash) pair: the sha256 of the file's bytes and the sha256 of everything that
shapes the answer (model id + revision, prompt, schema, tiling, generation settings). Rules:

* Normal run: process what is new, changed (new content hash), failed, pending, interrupted, or done but whose
  output file is gone or was overwritten by another job ("superseded"); skip what is done.
* ``retry_failed``: process only failed and interrupted jobs; skip new ones and done ones.
* ``force``: process everything (it wins over ``retry_failed``).
* Moved/renamed/copied file: same content hash, so a done job is not redone; the old output is kept where it is
  and `mark_seen` records the new source path. (The runner may copy the old output to the new mirrored name.)
* When a job is marked done with output path P, every other job recorded with output P (older content of that
  file, or another task writing the same name) becomes ``superseded``: its output was just overwritten, so it
  must not count as done if that content comes back.
* A row left ``running`` by a killed run is not done: `recover_interrupted` (call it under the RunLock) turns
  it into a failure that says so, and `summary` reports it as interrupted when no run holds the lock.
* ``mark_done`` refuses unless the output file exists, so "done" is committed only after the atomic write.

Every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent processes queue on busy_timeout instead of
failing on a read-to-write upgrade; WAL lets ``internvl status`` read while a run writes. Schema changes are
append-only migration functions recorded by name in the ``migrations`` table (simonw/llm style).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

from ..errors import BusyError, ExitCode, InputFileError, InternVLError, UsageError
from .outputs import STATE_DIR_NAME

LEDGER_NAME = "ledger.sqlite3"
LOCK_NAME = "run.lock"
BUSY_TIMEOUT_S = 60.0
STATUSES = ("pending", "running", "done", "failed", "superseded")
INTERRUPTED_MESSAGE = "interrupted: the run stopped before this document finished"
_TASK_HASH_VERSION = "internvl-task-v1"
_CHUNK = 1 << 20


# -- hashing --------------------------------------------------------------------------------------


def content_hash(path: str | os.PathLike[str]) -> str:
    """Streaming sha256 of the file's bytes; InputFileError if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise InputFileError("file not found", path=path) from None
    except PermissionError:
        raise InputFileError("permission denied", path=path) from None
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}", path=path) from None
    return digest.hexdigest()


def task_hash(config: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces, UTF-8); TypeError for values JSON cannot represent."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # The version tag lets a future change of canonical form avoid colliding with today's hashes.
    return hashlib.sha256(f"{_TASK_HASH_VERSION}\n{canonical}".encode("utf-8")).hexdigest()


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(path: str | os.PathLike[str]) -> str:
    """A path as storable UTF-8 text: bytes that are not UTF-8 are shown as \\xNN instead of failing the insert."""
    raw = os.fspath(path)
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")


# -- migrations -----------------------------------------------------------------------------------

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register a schema step; never edit or reorder a released one, only append new ones."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_jobs(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE jobs (
            content_hash TEXT NOT NULL,
            task_hash TEXT NOT NULL,
            source_path TEXT NOT NULL,
            output_path TEXT,
            status TEXT NOT NULL,
            error TEXT,
            error_class TEXT,
            exit_code INTEGER,
            pages INTEGER,
            pages_failed INTEGER,
            seconds REAL,
            started_at TEXT,
            finished_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            run_id TEXT,
            PRIMARY KEY (content_hash, task_hash)
        )
        """
    )
    db.execute("CREATE INDEX jobs_status ON jobs (status)")
    db.execute("CREATE INDEX jobs_output_path ON jobs (output_path)")


def migrate(db: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; returns the names applied."""
    steps = MIGRATIONS if migrations is None else migrations
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    _refuse_newer_schema(db, {fn.__name__ for fn in steps})
    applied = []
    for fn in steps:
        with _immediate(db):
            # Re-checked inside the write lock: another process may have applied it a moment ago.
            if db.execute("SELECT 1 FROM migrations WHERE name = ?", (fn.__name__,)).fetchone():
                continue
            fn(db)
            db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, _now()))
            applied.append(fn.__name__)
    return applied


def _refuse_newer_schema(db: sqlite3.Connection, known: set[str]) -> None:
    unknown = {row[0] for row in db.execute("SELECT name FROM migrations")} - known
    if unknown:
        raise UsageError(
            f"the ledger was written by a newer internvl-cli (unknown schema steps: {', '.join(sorted(unknown))})",
            hint="upgrade internvl-cli, or use a fresh --output folder",
        )


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front; a deferred transaction that later writes can fail with
    # SQLITE_BUSY at once in WAL mode, without waiting out busy_timeout.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- the ledger -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One ledger row; output_path is relative to OUTDIR (POSIX), times are ISO-8601 UTC."""

    content_hash: str
    task_hash: str
    source_path: str
    output_path: str | None
    status: str
    error: str | None
    error_class: str | None
    exit_code: int | None
    pages: int | None
    pages_failed: int | None
    seconds: float | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    run_id: str | None


_JOB_COLUMNS = ", ".join(f.name for f in fields(Job))


@dataclass(frozen=True)
class Decision:
    """Whether to process a document and why (the reason is for --verbose logs and dry runs)."""

    process: bool
    reason: str
    job: Job | None


class Ledger:
    """Open with `Ledger.open(out_dir)`; safe to share between threads of one process."""

    def __init__(self, out_dir: Path, db: sqlite3.Connection):
        self.out_dir = Path(out_dir)
        self._db = db
        self._mutex = threading.RLock()

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str], *, create: bool = True) -> Ledger:
        """Open (or with create=True make) OUTDIR/.internvl/ledger.sqlite3 and bring its schema up to date."""
        out_dir = Path(out_dir)
        db_path = out_dir / STATE_DIR_NAME / LEDGER_NAME
        if not create and not db_path.is_file():
            raise UsageError("no internvl ledger in this folder", path=out_dir,
                             hint="pass the --output folder of an earlier run")
        db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls(out_dir, _connect(db_path))
        except sqlite3.DatabaseError as exc:
            raise InternVLError(f"the ledger is unreadable ({exc})", path=db_path,
                                hint="move it aside to start over; existing outputs are kept but redone") from exc

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._mutex, _immediate(self._db) as db:
            yield db

    # -- queries ----------------------------------------------------------------------------------

    def lookup(self, content_hash: str, task_hash: str) -> Job | None:
        with self._mutex:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE content_hash = ? AND task_hash = ?",
                (content_hash, task_hash),
            ).fetchone()
        return Job(*row) if row else None

    def decide(self, content_hash: str, task_hash: str, *, force: bool = False,
               retry_failed: bool = False) -> Decision:
        """Apply the rerun rules of the module docstring to one document."""
        job = self.lookup(content_hash, task_hash)
        if force:
            return Decision(True, "forced", job)
        status = job.status if job else "new"
        if retry_failed:
            retry = status in ("failed", "running")
            return Decision(retry, "retrying failure" if retry else f"{status}, not a failure", job)
        if status == "done":
            missing = not self._output_exists(job)
            return Decision(missing, "done, but its output is missing" if missing else "done", job)
        return Decision(True, {"running": "interrupted"}.get(status, status), job)

    def should_process(self, content_hash: str, task_hash: str, force: bool = False,
                       retry_failed: bool = False) -> bool:
        return self.decide(content_hash, task_hash, force=force, retry_failed=retry_failed).process

    def _output_exists(self, job: Job | None) -> bool:
        return bool(job and job.output_path and (self.out_dir / job.output_path).is_file())

    # -- state changes ----------------------------------------------------------------------------

    def mark_pending(self, content_hash: str, task_hash: str, *, source: str | os.PathLike[str],
                     output_path: str | os.PathLike[str], run_id: str | None = None) -> None:
        """Record a newly discovered job so `status` shows the queue; an existing row is left untouched."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO jobs (content_hash, task_hash, source_path, output_path, status, run_id)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                (content_hash, task_hash, _text(source), self._relative(output_path), run_id),
            )

    def mark_running(self, content_hash: str, task_hash: str, *, source: str | os.PathLike[str],
                     output_path: str | os.PathLike[str], run_id: str) -> None:
        """Start an attempt: create or reset the row, count the attempt, clear the last result."""
        with self._write() as db:
            db.execute(
                """
                INSERT INTO jobs (content_hash, task_hash, source_path, output_path, status, attempts, run_id,
                                  started_at)
                VALUES (?, ?, ?, ?, 'running', 1, ?, ?)
                ON CONFLICT (content_hash, task_hash) DO UPDATE SET
                    source_path = excluded.source_path, output_path = excluded.output_path, status = 'running',
                    attempts = attempts + 1, run_id = excluded.run_id, started_at = excluded.started_at,
                    finished_at = NULL, error = NULL, error_class = NULL, exit_code = NULL,
                    pages = NULL, pages_failed = NULL, seconds = NULL
                """,
                (content_hash, task_hash, _text(source), self._relative(output_path), run_id, _now()),
            )

    def mark_done(self, content_hash: str, task_hash: str, *, output_path: str | os.PathLike[str],
                  pages: int, seconds: float, pages_failed: int = 0) -> None:
        """Commit success; the output file must already exist (write it atomically first)."""
        target = Path(output_path)
        if not target.is_file():
            raise RuntimeError(f"refusing to mark done: the output {target} does not exist yet")
        relative = self._relative(target)
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET status = 'superseded' WHERE output_path = ? AND status != 'superseded'"
                " AND NOT (content_hash = ? AND task_hash = ?)",
                (relative, content_hash, task_hash),
            )
            self._finish(db, content_hash, task_hash, status="done", output_path=relative, pages=pages,
                         pages_failed=pages_failed, seconds=seconds, error=None, error_class=None, exit_code=None)

    def mark_failed(self, content_hash: str, task_hash: str, *, error: BaseException | str,
                    pages: int | None = None, pages_failed: int | None = None, seconds: float | None = None,
                    exit_code: int | None = None) -> None:
        """Record a failure with the error's one-line message, class name and exit code."""
        message, error_class, code = _describe_error(error)
        with self._write() as db:
            self._finish(db, content_hash, task_hash, status="failed", pages=pages, pages_failed=pages_failed,
                         seconds=seconds, error=message, error_class=error_class,
                         exit_code=int(exit_code if exit_code is not None else code))

    def _finish(self, db: sqlite3.Connection, content_hash: str, task_hash: str, **values: Any) -> None:
        values["finished_at"] = _now()
        assignments = ", ".join(f"{name} = ?" for name in values)
        cursor = db.execute(
            f"UPDATE jobs SET {assignments} WHERE content_hash = ? AND task_hash = ?",
            (*values.values(), content_hash, task_hash),
        )
        if cursor.rowcount != 1:
            raise KeyError(f"no ledger row for {content_hash[:12]}/{task_hash[:12]}: call mark_running first")

    def mark_seen(self, content_hash: str, task_hash: str, *, source: str | os.PathLike[str]) -> None:
        """Remember where a skipped (e.g. moved) document was last seen; its status and output stay."""
        with self._write() as db:
            db.execute("UPDATE jobs SET source_path = ? WHERE content_hash = ? AND task_hash = ?",
                       (_text(source), content_hash, task_hash))

    def recover_interrupted(self) -> int:
        """Turn rows a killed run left `running` into failures; call only while holding the RunLock."""
        with self._write() as db:
            return db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, error_class = 'Interrupted', exit_code = NULL"
                " WHERE status = 'running'",
                (INTERRUPTED_MESSAGE,),
            ).rowcount

    # -- paths ------------------------------------------------------------------------------------

    def _relative(self, path: str | os.PathLike[str]) -> str:
        """An output path as given to the API (absolute or relative to the cwd, like `output_path` returns
        it) is stored relative to OUTDIR, so the whole folder can be moved."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.out_dir))
        if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise ValueError(f"output {path} is not inside {self.out_dir}")
        return _text(PurePosixPath(*Path(rel).parts).as_posix())

    # -- reporting --------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """Every row, oldest first (for readers such as `internvl eval` that want the latest per output)."""
        with self._mutex:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY COALESCE(finished_at, started_at, ''), rowid").fetchall()
        return [Job(*row) for row in rows]

    def summary(self) -> dict[str, Any]:
        """Counts per status, totals, the active run (if any) and failures, most recent first.

        Rows `running` while no run holds the lock, and failures a later run recorded as interrupted, are
        counted as `interrupted` (not `failed`) and listed with `"interrupted": true`. Seconds are rounded to
        milliseconds, as they are measured.
        """
        active = RunLock.holder(self.out_dir)
        with self._mutex:
            counts = dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
            recovered = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'failed' AND error_class = 'Interrupted'").fetchone()[0]
            totals = self._db.execute(
                "SELECT COALESCE(SUM(pages), 0), COALESCE(SUM(pages_failed), 0), COALESCE(SUM(seconds), 0)"
                " FROM jobs WHERE status = 'done'"
            ).fetchone()
            failed_rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'failed'"
                + (" OR status = 'running'" if active is None else "")
                + " ORDER BY COALESCE(finished_at, started_at, '') DESC, rowid DESC"
            ).fetchall()
            partial_rows = self._db.execute(
                "SELECT source_path, pages, pages_failed FROM jobs WHERE status = 'done' AND pages_failed > 0"
                " ORDER BY source_path").fetchall()
        result: dict[str, Any] = {status: counts.get(status, 0) for status in STATUSES}
        running = result["running"]
        result["running"] = running if active is not None else 0
        result["interrupted"] = (0 if active is not None else running) + recovered
        result["failed"] -= recovered
        result.update(
            total=sum(counts.values()), pages=totals[0], pages_failed=totals[1], seconds=round(totals[2], 3),
            active_run=active, failures=[_failure(Job(*row)) for row in failed_rows],
            # done under the page-error rule with some pages unreadable (by the model or in the file)
            pages_failed_in=[{"source": source, "pages": pages, "pages_failed": failed}
                             for source, pages, failed in partial_rows],
        )
        return result


def _connect(db_path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves instead of the module's implicit ones.
    db = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives process crashes; a power cut may lose the last commits, which only
        # means those documents are redone (their outputs were fsynced before the row was written).
        db.execute("PRAGMA synchronous = NORMAL")
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _describe_error(error: BaseException | str) -> tuple[str, str | None, int]:
    if isinstance(error, str):
        return error, None, int(ExitCode.OTHER_ERROR)
    if isinstance(error, InternVLError):
        return error.one_line(), type(error).__name__, int(error.exit_code)
    message = " ".join(str(error).split()) or type(error).__name__
    return message, type(error).__name__, int(getattr(error, "exit_code", ExitCode.OTHER_ERROR))


def _failure(job: Job) -> dict[str, Any]:
    interrupted = job.status == "running" or job.error_class == "Interrupted"
    return {
        "source": job.source_path,
        "output": job.output_path,
        "error": INTERRUPTED_MESSAGE if job.status == "running" else job.error,
        "error_class": "Interrupted" if job.status == "running" else job.error_class,
        "exit_code": job.exit_code,
        "interrupted": interrupted,
        "attempts": job.attempts,
        "finished_at": job.finished_at or job.started_at,
        "run_id": job.run_id,
        "content_hash": job.content_hash,
    }


# -- the run lock ---------------------------------------------------------------------------------


class RunLock:
    """Exclusive lock on OUTDIR for one run: `with RunLock(out_dir, wait=False): ...`.

    Uses flock on OUTDIR/.internvl/run.lock, so the kernel releases it when the holder dies, even by SIGKILL.
    The holder writes its pid, host and start time into the file for the BusyError message. flock is not
    reliable on some network file systems (old NFS); keep OUTDIR local for cron use. A process that forks
    (without exec) while holding the lock shares it with the child until both have exited.
    """

    _PROBE_RETRIES = 50

    def __init__(self, out_dir: str | os.PathLike[str], wait: bool = False,
                 on_wait: Callable[[str], None] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / STATE_DIR_NAME / LOCK_NAME
        self.wait = wait
        self.on_wait = on_wait      # called once, with a description of the holder, before blocking
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("RunLock is not re-entrant")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not self._try_exclusive(fd):
                self._wait_or_raise(fd)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _try_exclusive(self, fd: int) -> bool:
        """Non-blocking exclusive lock; a `status` probe holds only a shared lock for microseconds, so when
        the lock can be shared (no run holds it) retry briefly instead of reporting a busy folder."""
        for _ in range(self._PROBE_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a run holds it exclusively
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.001)
        return False

    def _wait_or_raise(self, fd: int) -> None:
        who = describe_holder(_read_holder(fd))
        if not self.wait:
            raise BusyError(f"another run ({who}) is using this output folder", path=self.out_dir)
        if self.on_wait is not None:
            self.on_wait(who)
        fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # so a later reader never shows a finished run as the holder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def holder(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
        """Who holds OUTDIR's lock ({} if unknown), or None when no run does; takes the lock only for a probe."""
        path = Path(out_dir) / STATE_DIR_NAME / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_holder(fd)
            os.close(fd)
            return info
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return None


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now()}
    data = json.dumps(info).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_holder(fd: int) -> dict[str, Any]:
    # The holder may be between truncate and write, or was killed mid-write: unknown, not an error.
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: Mapping[str, Any]) -> str:
    """'pid 1234 on host, started 2025-01-01T10:00:00.000Z' or 'holder unknown'."""
    if not info.get("pid"):
        return "holder unknown"
    text = f"pid {info['pid']}"
    if info.get("host") and info["host"] != socket.gethostname():
        text += f" on {info['host']}"
    if info.get("started_at"):
        text += f", started {info['started_at']}"
    return text
