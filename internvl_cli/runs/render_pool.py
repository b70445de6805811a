"""Step 5, render workers of a run that feeds servers: pages rendered (MuPDF) and encoded (PNG) in worker
processes, so every core works on them while the main process only sends requests and keeps the books.

`--render-workers N` processes (default: the CPU count; 0 or 1 renders in the run's own preparing thread). A
PDF page goes to a worker as (file, password, page index, grid size): the worker opens the file once (a few kept
open) and renders exactly as `open_pages`' pages do; an image page, already decoded here, goes as its grid's
raster. Only the PNG comes back, and what is held (prepared ahead, queued or on the wire) is bounded by the
run's byte budget as well as by the engine's window. Workers never touch the ledger or the outputs.
"""
from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..documents.encoded import (ByteBudget, EncodedPicture, InProcessPngPreparer, Preparer, RenderFailed,
                                 encode_png, grid_picture, pending_image)
from ..documents.pages import Page, pdf_renderer
from ..documents.tiling import TiledImage, TilingConfig, plan_tiles
from ..errors import InputFileError, InternVLError, PasswordError, UsageError

# What encoded pictures a run may hold at once: ~0.3 MB per A4 page at 7 tiles, so about 800 pages; far more
# than `--concurrency` keeps in flight, and a fraction of the ~7 MB rasters each in-flight page used to hold.
RENDER_BUDGET_BYTES = 256 * 2**20
MAX_RENDER_WORKERS = 256
ENCODE_THREADS = 2  # with 0 or 1 render workers: deflate (GIL released) runs beside MuPDF, on the other core
_PARENT_CHECK_SECONDS = 1.0
_KEPT_OPEN = 4  # documents a worker keeps open (pages of one document arrive together)


def default_render_workers() -> int:
    return os.cpu_count() or 1


def check_render_workers(workers: int | None) -> int:
    """The worker count a run uses; a usage error outside 0..MAX_RENDER_WORKERS."""
    workers = default_render_workers() if workers is None else workers
    if not 0 <= workers <= MAX_RENDER_WORKERS:
        raise UsageError(f"--render-workers must be between 0 and {MAX_RENDER_WORKERS}, not {workers}")
    return workers


class RenderPool:
    """A Preparer whose pictures are made by worker processes; `close()` ends them."""

    def __init__(self, workers: int, budget: ByteBudget):
        self.workers = workers
        self.budget = budget
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context(),
                                         initializer=_worker_started, initargs=(os.getpid(),))

    def prepare(self, page: Page, config: TilingConfig) -> TiledImage:
        if page.kind == "pdf":
            plan = plan_tiles(page.width, page.height, config)
            future = self._pool.submit(_render_pdf, str(page.doc_path), page.password, page.index,
                                       plan.cols * config.tile_size, plan.rows * config.tile_size)
        else:  # decoded in this process already: only the encoding is sent away
            future = self._pool.submit(_encode, np.asarray(grid_picture(page, config), dtype=np.uint8))
        return pending_image(page, config, EncodedPicture(_typed(future, page.doc_path), self.budget.track))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class EncodeThreads:
    """The threads that encode pages rendered in the run's preparing thread (0 or 1 render workers)."""

    def __init__(self, threads: int):
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png-encode")

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _worker_context():
    """Workers forked from a fork server that imported the rendering code and PyMuPDF once (runs/render_preload.py)
    on Linux; started afresh (spawn) elsewhere, each importing them itself. Never forked from the run: it
    already has threads, whose locks a forked child would inherit."""
    if not _watchable_by_pidfd() or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")  # a worker without pidfds watches its parent: the run
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["internvl_cli.runs.render_preload"])
    return context


def start_preparer(workers: int, budget: ByteBudget) -> tuple[Preparer, RenderPool | EncodeThreads]:
    """In-process rendering (encoding in ENCODE_THREADS threads) for 0 or 1 workers, else a pool of worker
    processes; the second item is to be closed when the run ends."""
    if workers <= 1:
        threads = EncodeThreads(ENCODE_THREADS)
        return InProcessPngPreparer(budget, threads.executor), threads
    pool = RenderPool(workers, budget)
    return pool, pool


def settle_depth(workers: int) -> int:
    """Units a run keeps queued while their pictures are made, so every worker (or encoding thread) has work."""
    return 4 * max(workers, ENCODE_THREADS)


def _typed(future: Future, path: Path) -> Future:
    """The worker's future, its RenderFailed of a typed error turned back into one, naming the document as
    the error raised here would have (the page fails alone)."""
    typed: Future = Future()

    def relay(done: Future) -> None:
        error = done.exception()
        if error is None:
            typed.set_result(done.result())
        elif isinstance(error, RenderFailed) and error.typed:
            kind = PasswordError if error.kind == PasswordError.__name__ else InputFileError
            typed.set_exception(kind(str(error), path=path))
        else:
            typed.set_exception(error)

    future.add_done_callback(relay)
    return typed


# ---------------------------------------------------------------- in the worker processes

_renderers: OrderedDict = OrderedDict()


def _worker_started(run: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle (pages stay pending)
    # A worker waiting for work does not notice its run killed with -9: it would live on, orphaned (and a fork
    # server's workers keep it alive too). It watches the run instead and ends with it.
    threading.Thread(target=_end_with_run, args=(run,), daemon=True).start()


def _end_with_run(run: int) -> None:
    try:
        handle = os.pidfd_open(run)
    except ProcessLookupError:  # ended already
        os._exit(0)
    except (AttributeError, OSError):  # no pidfds (not Linux, or a kernel before 5.3): look every second
        while _running(run):
            time.sleep(_PARENT_CHECK_SECONDS)
        os._exit(0)
    select.select([handle], [], [])  # readable once the run has ended (reaped or not)
    os._exit(0)


def _running(run: int) -> bool:
    if os.getppid() == run:  # spawned: the run is the parent while it lives
        return True
    try:
        os.kill(run, 0)
    except (ProcessLookupError, PermissionError):  # gone (or its pid taken again by another user's process)
        return False
    return True


def _watchable_by_pidfd() -> bool:
    return hasattr(os, "pidfd_open")


def _render_pdf(path: str, password: str | None, index: int, width: int, height: int) -> bytes:
    try:
        key = (path, password)
        render = _renderers.get(key)
        if render is None:
            render = _renderers[key] = pdf_renderer(Path(path), password)
            while len(_renderers) > _KEPT_OPEN:
                _renderers.popitem(last=False)
        _renderers.move_to_end(key)
        return encode_png(np.asarray(render(index, width, height), dtype=np.uint8))
    except InternVLError as exc:
        raise RenderFailed(type(exc).__name__, exc.message, typed=True) from None
    except Exception as exc:  # MuPDF's own exceptions may not pickle: sent back by name and message
        raise RenderFailed(type(exc).__name__, str(exc)) from None


def _encode(pixels: np.ndarray) -> bytes:
    try:
        return encode_png(pixels)
    except Exception as exc:
        raise RenderFailed(type(exc).__name__, str(exc)) from None
