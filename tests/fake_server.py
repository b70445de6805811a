"""A misbehaving OpenAI-compatible server on 127.0.0.1 for the server engine's fault tests.

It stands in for a remote `vllm serve`, not for our model path, so its answers are fixed text: each names the
image size it was sent, which proves which request an output belongs to. Faults are programmed per request
(`plan`, consumed in order) or for every request (`always`). Every wait in it is bounded and ends when the
server stops, so a test can never hang on it; threads are daemons and the fixture's teardown stops it.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

FAULTS = ("ok", "503", "reset", "truncated", "malformed", "slow", "huge", "empty", "null", "reasoning")
HUGE_BYTES = 5 * 1024 * 1024


class FakeOpenAI(ThreadingHTTPServer):
    """Chat completions with programmable faults. `api_key`: requests without `Bearer KEY` (or Basic with
    `basic`, a "user:password") get 401. `models`: the JSON GET /v1/models answers (any shape)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, api_key: str | None = None, basic: str | None = None,
                 models: object = None, retry_after: str = "1", slow_seconds: float = 30.0,
                 die_after: int | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.api_key, self.basic, self.retry_after, self.slow_seconds = api_key, basic, retry_after, slow_seconds
        self.models = models if models is not None else {"object": "list", "data": [{"id": "tiny"}]}
        self.queued: deque[str] = deque()
        self.default = "ok"
        self.calls = 0  # chat completions asked for
        self.answered: list[str] = []  # texts of the answers sent whole
        self.model_calls = 0
        self.connections: set[tuple] = set()  # client addresses seen: keep-alive reuses them
        self.headers_seen: list[dict] = []
        self.sockets: set[socket.socket] = set()  # open client connections, closed when the server stops
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.die_after = die_after  # answers sent before the server stops by itself (a server that dies)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def port(self) -> int:
        return self.server_address[1]

    def plan(self, *faults: str) -> None:
        """The next requests' faults, in order; after them `default`."""
        assert all(fault in FAULTS for fault in faults), faults
        with self.lock:
            self.queued.extend(faults)

    def always(self, fault: str) -> None:
        assert fault in FAULTS, fault
        self.default = fault

    def next_fault(self) -> str:
        with self.lock:
            self.calls += 1
            return self.queued.popleft() if self.queued else self.default

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        if not self.stopped.is_set():
            self.stop()

    def stop(self) -> None:
        """Stops answering and closes the listening socket (a dead server: connections are refused)."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        with self.lock:
            sockets, self.sockets = list(self.sockets), set()
        for sock in sockets:  # a dead server's kept-alive connections die with it
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.stopped.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, *args):  # keep the test output clean
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.sockets.add(self.connection)

    def finish(self):
        with self.server.lock:
            self.server.sockets.discard(self.connection)
        super().finish()

    def _send(self, status: int, payload: object, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        server: FakeOpenAI = self.server
        if server.api_key is None and server.basic is None:
            return True
        given = self.headers.get("Authorization", "")
        if server.api_key is not None and given == f"Bearer {server.api_key}":
            return True
        basic = server.basic and "Basic " + base64.b64encode(server.basic.encode()).decode()
        if basic and given == basic:
            return True
        self._send(401, {"error": {"message": "Unauthorized", "type": "invalid_request_error"}})
        return False

    def do_GET(self):
        server: FakeOpenAI = self.server
        with server.lock:
            server.model_calls += 1
            server.headers_seen.append(dict(self.headers))
        if not self._authorised():
            return
        self._send(200, server.models)

    def do_POST(self):
        server: FakeOpenAI = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if server.stopping.is_set():
            self.close_connection = True
            return
        with server.lock:
            server.connections.add(self.client_address)
            server.headers_seen.append(dict(self.headers))
        if not self._authorised():
            return
        fault = server.next_fault()
        if fault == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)  # dropped mid-request: no answer at all
            self.close_connection = True
            return
        if fault == "503":
            self._send(503, {"error": {"message": "overloaded, try again"}}, {"Retry-After": server.retry_after})
            return
        if fault == "malformed":
            self._send(200, {"object": "chat.completion", "id": "x"})  # no choices
            return
        if fault == "slow":
            server.stopping.wait(server.slow_seconds)  # bounded, and over at once when the server stops
            if server.stopping.is_set():
                self.close_connection = True
                return
        text = _page_text(body)
        if fault == "truncated":
            data = json.dumps(_completion(text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # cut mid-body, then the connection closes
            self.close_connection = True
            return
        if fault == "huge":
            text = " ".join(f"w{i}" for i in range(HUGE_BYTES // 7))  # ~5 MB that never loops
        message = {"role": "assistant", "content": text}
        if fault in ("empty", "null"):
            message["content"] = "" if fault == "empty" else None
        if fault == "reasoning":
            message = {"role": "assistant", "content": None, "reasoning_content": text}
        self._send(200, _completion(message=message))
        if fault == "ok":
            with server.lock:
                server.answered.append(text)
                dying = server.die_after is not None and len(server.answered) >= server.die_after
            if dying and not server.stopping.is_set():
                server.stopping.set()
                threading.Thread(target=server.stop, daemon=True).start()


def _page_text(body: dict) -> str:
    url = body["messages"][-1]["content"][0]["image_url"]["url"]
    picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return f"page of {picture.width}x{picture.height} pixels"


def _completion(text: str = "", message: dict | None = None) -> dict:
    message = message or {"role": "assistant", "content": text}
    return {"object": "chat.completion", "model": "tiny",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 3}}
