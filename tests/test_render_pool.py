"""Pages for servers rendered and encoded ahead, in worker processes (`--render-workers`): the server sees the
very pixels the raster path makes, records are the same with 0 and 2 workers, a finished folder is not redone
when only the worker count changes, and a page that fails in a worker fails alone, naming its document.

The HTTP server here is a test double of the transport only: each answer is the size and a digest of the pixels
it decoded from the PNG it was sent, so an output proves exactly what the server saw.
"""
from __future__ import annotations

import base64
import gc
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from awkward import make_broken_page_pdf
from conftest import SAMPLES
from internvl_cli.documents.encoded import ByteBudget, encode_png
from internvl_cli.documents.pages import open_pages, pdf_renderer
from internvl_cli.documents.tiling import TilingConfig, prepare_page
from internvl_cli.errors import InputFileError
from internvl_cli.runs.render_pool import RenderPool


def pixel_digest(pixels: np.ndarray) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]} {hashlib.sha256(pixels.tobytes()).hexdigest()[:16]}"


class PixelEcho(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answered = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        text = pixel_digest(np.asarray(picture.convert("RGB")))
        self.server.answered.set()
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 300, "completion_tokens": 3}})


@pytest.fixture()
def echo():
    server = PixelEcho()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_our_png_decodes_to_the_very_pixels_given():
    noise = np.random.default_rng(7).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    page = next(iter(open_pages(SAMPLES / "invoice.pdf")))
    rendered = prepare_page(page, TilingConfig()).grid
    for pixels in (noise, rendered, np.zeros((1, 1, 3), np.uint8)):
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))).convert("RGB"))
        assert decoded.shape == pixels.shape and np.array_equal(decoded, pixels)


def test_a_workers_raster_is_the_pages_own_and_outlives_its_renderer():
    page = next(iter(open_pages(SAMPLES / "invoice.pdf")))
    expected = prepare_page(page, TilingConfig()).grid
    height, width = expected.shape[:2]
    render = pdf_renderer(SAMPLES / "invoice.pdf", None)
    pixels = render(0, width, height)
    del render
    gc.collect()
    clutter = [np.full((height, width, 3), 7, np.uint8) for _ in range(4)]  # would reuse freed pixmap memory
    assert np.array_equal(pixels, expected) and not pixels.flags.writeable
    del clutter  # held until the pixels were compared


def test_a_worker_without_pidfds_sees_its_run_end():
    from internvl_cli.runs.render_pool import _running

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert _running(os.getpid()) and not _running(int(ended.stdout))


def records(out: Path) -> dict[str, list[dict]]:
    return {path.name: [_comparable(json.loads(line)) for line in path.read_text().splitlines()]
            for path in sorted(out.glob("*.jsonl"))}


def _comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "seconds"}


def test_records_are_the_same_with_0_and_2_render_workers(cli, echo, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "invoice.pdf", inbox)
    shutil.copy(SAMPLES / "chart.png", inbox)
    make_broken_page_pdf(inbox)  # page 2 cannot be read; the tree is rebuilt around it
    outputs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"out-{workers}"
        code, _, err = cli("ocr", inbox, "-o", out, "--format", "jsonl", "--engine", "server",
                           "--server", echo.url, "--model", "tiny", "--render-workers", workers)
        assert code == 0, err
        outputs[workers] = records(out)
    assert outputs["0"] == outputs["2"]
    invoice = outputs["2"]["invoice.pdf.jsonl"][0]
    page = next(iter(open_pages(SAMPLES / "invoice.pdf")))
    assert invoice["text"] == pixel_digest(prepare_page(page, TilingConfig()).grid)  # the raster path's pixels
    broken = outputs["2"]["broken-page.pdf.jsonl"]
    assert len(broken) == 12 and "page 2 skipped" in broken[1]["error"]
    later = next(iter(open_pages(inbox / "broken-page.pdf", pages="7")))  # after the rebuilt part of the tree
    assert broken[6]["text"] == pixel_digest(prepare_page(later, TilingConfig()).grid)


def test_changing_only_the_worker_count_redoes_nothing(cli, echo, tmp_path):
    page = tmp_path / "invoice.pdf"
    shutil.copy(SAMPLES / "invoice.pdf", page)
    out = tmp_path / "out"
    common = ["--engine", "server", "--server", echo.url, "--model", "tiny"]
    code, _, err = cli("ocr", page, "-o", out, *common, "--render-workers", "0")
    assert code == 0, err
    code, _, err = cli("ocr", page, "-o", out, *common, "--render-workers", "2")
    assert code == 0 and "0 done, 0 failed, 1 skipped" in err


def test_a_page_that_fails_in_a_worker_fails_alone_naming_its_document(tmp_path):
    pdf = tmp_path / "moved.pdf"
    shutil.copy(SAMPLES / "invoice.pdf", pdf)
    page = next(iter(open_pages(pdf)))  # opened here; the worker opens the file again, by then garbage
    pdf.write_bytes(b"not a PDF any more")
    pool = RenderPool(2, ByteBudget(2**20))
    try:
        image = pool.prepare(page, TilingConfig())
        with pytest.raises(InputFileError) as failure:
            image.settle()
    finally:
        pool.close()
    assert failure.value.path == str(pdf) and "corrupt or unreadable PDF" in failure.value.message


def test_kill_9_of_the_run_ends_its_workers_and_a_rerun_finishes(echo, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(4):
        shutil.copy(SAMPLES / "invoice.pdf", inbox / f"doc{index}.pdf")
    command = [sys.executable, "-m", "internvl_cli.cli", "-q", "ocr", str(inbox), "-o", str(tmp_path / "out"),
               "--engine", "server", "--server", echo.url, "--model", "tiny", "--render-workers", "2"]
    run = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert echo.answered.wait(60)  # workers are rendering
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 20
    while _session_processes(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(run.pid) == []  # no orphaned render worker lives on
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert sorted(path.name for path in (tmp_path / "out").glob("*.md")) == [f"doc{i}.pdf.md" for i in range(4)]


def _session_processes(session: int) -> list[str]:
    return subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True).stdout.split()
