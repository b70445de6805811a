"""An instant OpenAI-compatible server on 127.0.0.1 for client-side benchmarks and tests: `/v1/models` names one
model, every chat completion is answered at once with a short fixed text. It never looks at the images, so
what is measured is the client alone (render, encode, HTTP)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-internvl"
ANSWER = "Quarterly report. Total: 1,234.50"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive when the client asks for it

    def log_message(self, format, *args) -> None:  # no access log on stderr
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._reply(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._reply(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._reply(404, {"error": {"message": f"no route {self.path}"}})
        self.server.received_bytes += len(body)  # type: ignore[attr-defined]
        self.server.requests += 1  # type: ignore[attr-defined]
        self._reply(200, {
            "id": "cmpl-fake", "object": "chat.completion", "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.server.answer}}],  # type: ignore
            "usage": {"prompt_tokens": 1900, "completion_tokens": 12, "total_tokens": 1912},
        })

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeServer:
    """`with FakeServer() as server: ... server.url` (ends in /v1); counts requests and bytes received."""

    def __init__(self, answer: str = ANSWER):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.answer = answer  # type: ignore[attr-defined]
        self._httpd.requests = 0  # type: ignore[attr-defined]
        self._httpd.received_bytes = 0  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return self._httpd.requests  # type: ignore[attr-defined]

    @property
    def received_bytes(self) -> int:
        return self._httpd.received_bytes  # type: ignore[attr-defined]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


if __name__ == "__main__":  # a server to point a manual run at
    import time

    with FakeServer() as server:
        print(server.url, flush=True)
        while True:
            time.sleep(3600)
