"""The server engine's own logic, without a model: request translation, and retries against a server that
drops connections and answers 503 at times (nothing lost, nothing duplicated), exit code 12 when none answers.

The HTTP server here is a test double of the *transport* only: its answers name the page size it was sent,
so each output proves which request it belongs to. The real model behind a real `vllm serve` is exercised in
test_engine_vllm.py.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from conftest import SAMPLES
from internvl_cli.documents.tiling import TilingConfig, prepare_image
from internvl_cli.decoding.repetition import LoopRule
from internvl_cli.decoding.constraints import Constraint
from internvl_cli.engine.base import GenerationRequest, Sampling
from internvl_cli.engine.server import ServerEngine
from internvl_cli.errors import ExitCode
from internvl_cli.tasks.tables import table_grammar


class FlakyOpenAI(ThreadingHTTPServer):
    """Chat completions that fail on purpose: request n is dropped (n % 4 == 1) or refused with 503
    (n % 4 == 2); the others are answered with the size of the image they carried."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.calls = 0
        self.answered: list[str] = []
        self.bodies: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: FlakyOpenAI = self.server
        with server.lock:
            server.calls += 1
            call = server.calls
            server.bodies.append(body)
        if call % 4 == 1:
            self.connection.shutdown(socket.SHUT_RDWR)  # dropped mid-request: no answer at all
            return
        if call % 4 == 2:
            self._send(503, {"error": {"message": "overloaded, try again"}})
            return
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        text = f"page of {picture.width}x{picture.height} pixels"
        with server.lock:
            server.answered.append(text)
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop", "token_ids": [1, 2, 3]}],
                         "usage": {"prompt_tokens": 300, "completion_tokens": 3}})


@pytest.fixture()
def flaky():
    server = FlakyOpenAI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def page_request(width: int, height: int, **kwargs) -> GenerationRequest:
    image = Image.new("RGB", (width, height), "white")
    return GenerationRequest(images=[prepare_image(image, TilingConfig(max_tiles=6))], text="Read it.", **kwargs)


def test_a_page_goes_at_its_grid_size_with_its_tile_budget():
    engine = ServerEngine(["127.0.0.1:1"], "tiny")
    body = engine.request_body(page_request(1240, 1754, sampling=Sampling(max_new_tokens=77)))
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Read it."}
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")  # lossless
    picture = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])))
    assert picture.size == (2 * 448, 3 * 448)  # A4 -> 2x3 grid, as `internvl inspect` says
    assert body["mm_processor_kwargs"] == {"crop_to_patches": True, "min_patches": 1, "max_patches": 6}
    assert body["max_tokens"] == 77 and body["temperature"] == 0.0  # greedy
    assert "structured_outputs" not in body
    assert LoopRule(**json.loads(body["vllm_xargs"]["internvl_loop"])) == LoopRule()  # our processor stops loops
    assert engine.servers[0].url == "http://127.0.0.1:1/v1"


def test_the_bytes_sent_are_the_request_body_with_its_pictures_spliced_in():
    engine = ServerEngine(["127.0.0.1:1"], "tiny")
    request = GenerationRequest(images=[page_request(900, 300).images[0], page_request(300, 900).images[0]],
                                text='Read both: "quoted" \u00e9 internvl-picture-', system="Be exact.")
    sent = json.loads(engine.request_payload(request))
    assert sent == engine.request_body(request)
    assert [part["type"] for part in sent["messages"][1]["content"]] == ["image_url", "image_url", "text"]


def test_constraints_become_structured_outputs_and_wrap_up_arguments():
    engine = ServerEngine(["http://h:8000/v1"], "tiny")
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    body = engine.request_body(page_request(500, 500, sampling=Sampling(max_new_tokens=400),
                                            constraint=Constraint("json_schema", json.dumps(schema))))
    assert body["structured_outputs"] == {"json": schema, "disable_any_whitespace": True}
    assert body["vllm_xargs"]["internvl_close_after"] == 300  # the last quarter is for wrapping up
    body = engine.request_body(page_request(500, 500, constraint=Constraint("grammar", table_grammar())))
    assert body["structured_outputs"] == {"grammar": table_grammar()}


def test_drops_and_503s_are_retried_nothing_lost_nothing_duplicated(cli, flaky, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sizes = [(600, 400), (400, 600), (500, 500), (900, 300), (300, 900), (700, 500)]
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i, i, i)).save(inbox / f"page{i}.png")
    out = tmp_path / "out"
    code, _, err = cli("ocr", inbox, "-o", out, "--engine", "server", "--server", flaky.url, "--model", "tiny",
                       "--concurrency", "3")
    assert code == 0, err
    assert flaky.calls > len(sizes)  # failures happened and were retried
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        rows = db.execute("SELECT source_path, status FROM jobs").fetchall()
    assert sorted((Path(source).name, status) for source, status in rows) == [
        (f"page{i}.png", "done") for i in range(len(sizes))]
    for i, (width, height) in enumerate(sizes):
        record = (out / f"page{i}.png.md").read_text()
        grid = prepare_image(Image.new("RGB", (width, height)), TilingConfig()).plan
        assert f"page of {grid.cols * 448}x{grid.rows * 448} pixels" in record  # its own answer
    code, _, err = cli("ocr", inbox, "-o", out, "--engine", "server", "--server", flaky.url, "--model", "tiny")
    assert code == 0 and "6 documents already done" in err


def test_a_dead_server_beside_a_live_one_does_not_stop_the_run(cli, flaky, tmp_path):
    page = tmp_path / "a.png"
    shutil.copy(SAMPLES / "chart.png", page)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    code, stdout, err = cli("ocr", page, "--engine", "server", "--server", dead, "--server", flaky.url,
                            "--model", "tiny", "--format", "jsonl")
    assert code == 0, err
    assert json.loads(stdout)["text"].startswith("page of ")


def test_no_server_reachable_exits_12_with_one_line(cli, tmp_path):
    page = tmp_path / "a.png"
    shutil.copy(SAMPLES / "chart.png", page)
    code, stdout, err = cli("ocr", page, "--engine", "server", "--server", f"127.0.0.1:{free_port()}")
    assert code == ExitCode.SERVER and stdout == ""
    assert "no server answered" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_the_engine_is_part_of_the_task_hash(tiny_model):
    from internvl_cli.engine import EngineSettings, load_engine
    from internvl_cli.runs.batch import task_fingerprint
    from internvl_cli.tasks.ocr import OcrTask
    from internvl_cli.tasks.pagewise import PageOptions

    hf = load_engine(str(tiny_model))
    served = load_engine(str(tiny_model), settings=EngineSettings(kind="server", servers=["127.0.0.1:1"]))
    task = OcrTask(PageOptions(tiling=hf.tiling, sampling=Sampling()), hf.model_id)
    assert task_fingerprint(task, hf) == task.fingerprint()  # ledgers written before engines stay valid
    assert task_fingerprint(task, served) == {**task.fingerprint(), "engine": "server"}


def test_usage_errors_name_the_option(cli, tmp_path):
    page = tmp_path / "a.png"
    shutil.copy(SAMPLES / "chart.png", page)
    code, _, err = cli("ocr", page, "--engine", "tgi")
    assert code == ExitCode.BAD_ARGS and "--engine" in err
    code, _, err = cli("ocr", page, "--engine", "server")
    assert code == ExitCode.BAD_ARGS and "--server" in err
