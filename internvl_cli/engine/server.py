"""Step 3g, the client of OpenAI-compatible servers (`vllm serve`, LMDeploy, SGLang): many requests in flight,
spread over one or more servers, retried with backoff; the same pages, tiles and flags as in-process engines.

Each page goes as a PNG data URL at the grid's pixel size (lossless, so the server's tiler sees our pixels;
encoded once, by the run's render workers when it has them)
with our tile budget in `mm_processor_kwargs`, constraints in `structured_outputs` and loop/wrap-up settings
as vLLM's extra fields (other servers ignore what they do not know). Connection errors, timeouts, 429 and 5xx
are retried on the least busy live server; a server that fails is rested before it gets work again.
"""
from __future__ import annotations

import base64
import http.client
import json
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import ServerError, UsageError
from .base import BatchLimits, Engine, GenerationRequest, GenerationResult, Outcome, RequestSource, Tag
from .batching import generate_in_order
from ..models.info import CheckpointInfo
from .vllm_requests import encoded_pictures, extra_args, finish_answer, sampling_fields, structured_outputs, tile_budget

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class _Server:
    url: str  # base URL ending in /v1
    in_flight: int = 0
    resting_until: float = 0.0
    failures: int = 0

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + path


@dataclass
class RetryPolicy:
    attempts: int = 6  # tries per request, over all servers
    base_delay: float = 0.5  # seconds; doubled per failure, with jitter, at most max_delay
    max_delay: float = 8.0
    timeout: float = 600.0  # seconds per request (a long page on a busy server takes minutes)


@dataclass
class _Failure(Exception):
    message: str
    retryable: bool
    status: int | None = None
    details: list[str] = field(default_factory=list)


class ServerEngine(Engine):
    """Pages sent to OpenAI-compatible chat-completions endpoints; `--concurrency` requests in flight."""

    name = "server"

    def __init__(self, urls: list[str], model: str | None, info: CheckpointInfo | None = None,
                 concurrency: int = 32, retry: RetryPolicy = RetryPolicy()):
        if not urls:
            raise UsageError("--engine server needs at least one --server URL (e.g. http://127.0.0.1:8000/v1)")
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        self.servers = [_Server(_normalise_url(url)) for url in urls]
        self.requested_model = model
        # recorded in outputs and in the ledger's task hash, so it is fixed before any server is asked
        self.model_id = model or "served"
        self.served_model: str | None = None  # the name requests carry, read from the servers on load()
        # a local checkpoint's own facts when --model names one, else InternVL's standard tiles
        self.info = info or CheckpointInfo.standard(self.model_id)
        self.concurrency = concurrency
        self.retry = retry
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def context_length(self) -> int | None:
        """Unknown: each server runs the model with its own context (`vllm serve --max-model-len`)."""
        return None

    # ------------------------------------------------------------------ connecting

    def load(self) -> None:
        """Asks every server which models it serves; fails with exit code 12 when none answers."""
        if self._loaded:
            return
        served: dict[str, list[str]] = {}
        problems = []
        for server in self.servers:
            try:
                body = self._call(server, "GET", "/models", None, timeout=min(30.0, self.retry.timeout))
                served[server.url] = [entry.get("id") for entry in body.get("data", []) if entry.get("id")]
            except _Failure as failure:
                server.resting_until = time.monotonic() + self.retry.max_delay
                problems.append(f"{server.url}: {failure.message}")
        if not served:
            raise ServerError("no server answered: " + "; ".join(problems),
                              hint="check --server URLs and that `vllm serve` has finished loading")
        self.served_model = self._pick_model(served)
        self._loaded = True

    def _pick_model(self, served: dict[str, list[str]]) -> str:
        names = {name for names in served.values() for name in names}
        wanted = self.requested_model
        if wanted and wanted in names:
            return wanted
        if len(names) == 1:
            return names.pop()
        listing = ", ".join(sorted(names)) or "none"
        if wanted:
            raise ServerError(f"the servers do not serve '{wanted}' (they serve: {listing})",
                              hint="pass --model with one of the served names")
        raise ServerError(f"the servers serve several models ({listing})", hint="pick one with --model")

    def describe(self) -> dict:
        return {"backend": "server", "model": self.served_model or self.model_id, "servers": len(self.servers),
                "concurrency": self.concurrency}

    # ------------------------------------------------------------------ generation

    def window(self, limits: BatchLimits) -> int:
        return 2 * self.concurrency

    def takes_encoded_pictures(self) -> bool:
        return True

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return generate_in_order(self.stream, requests)

    def stream(self, source: RequestSource, limits: BatchLimits = BatchLimits()) -> Iterator[tuple[Tag, Outcome]]:
        self.load()
        done: queue.Queue = queue.Queue()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="internvl-server")
        in_flight = 0
        cancelled = threading.Event()
        try:
            while True:
                while in_flight < self.concurrency:
                    item = source.take(wait=in_flight == 0)
                    if item is None:
                        break
                    pool.submit(self._run_one, item[0], item[1], done, cancelled)
                    in_flight += 1
                if in_flight == 0:
                    if source.done:
                        return
                    continue
                try:
                    tag, outcome = done.get(timeout=0.1)  # short, so newly prepared pages are sent promptly
                except queue.Empty:
                    continue
                in_flight -= 1
                yield tag, outcome
        finally:
            cancelled.set()  # queued requests are dropped; those on the wire finish or time out
            pool.shutdown(wait=False, cancel_futures=True)

    def _run_one(self, tag: Tag, request: GenerationRequest, done: queue.Queue, cancelled: threading.Event) -> None:
        if cancelled.is_set():
            return
        started = time.perf_counter()
        try:
            outcome: Outcome = self._complete(request, started)
        except ServerError as error:
            outcome = error
        except Exception as exc:  # a bug in translation: fail this page, not the run
            outcome = ServerError(f"unexpected {type(exc).__name__}: {exc}")
        done.put((tag, outcome))

    def _complete(self, request: GenerationRequest, started: float) -> GenerationResult:
        """Sends one request until it succeeds, `attempts` tries at most; a failed server rests (growing
        backoff) while the next try goes to another live one, or waits for the first to come back."""
        body = self.request_body(request)
        last: _Failure | None = None
        tries = 0
        while tries < self.retry.attempts:
            server = self._choose()
            if server is None:
                time.sleep(self._until_one_is_back())
                continue
            tries += 1
            try:
                answer = self._call(server, "POST", "/chat/completions", body, timeout=self.retry.timeout)
                result = self._result(answer, request, server, time.perf_counter() - started)
                self._succeeded(server)
                return result
            except _Failure as failure:
                self._failed(server, failure)
                last = failure
                if not failure.retryable:
                    break
            finally:
                with self._lock:
                    server.in_flight -= 1
        assert last is not None
        raise ServerError(f"the server answered with an error: {last.message}" if last.status else
                          f"no server could be reached: {last.message}")

    def request_body(self, request: GenerationRequest) -> dict:
        """The OpenAI chat-completions body for one request (vLLM's extra fields included)."""
        content: list[dict] = [{"type": "image_url", "image_url": {"url": _data_url(picture)}}
                               for picture in encoded_pictures(request)]
        content.append({"type": "text", "text": request.text})
        messages = [{"role": "user", "content": content}]
        if request.system:  # None or "": the server's chat template decides (see README: engines and prompts)
            messages.insert(0, {"role": "system", "content": request.system})
        body: dict = {
            "model": self.served_model or self.model_id, "messages": messages,
            **sampling_fields(request.sampling), "n": 1, "stream": False,
            "mm_processor_kwargs": tile_budget(request), "skip_special_tokens": True, "return_token_ids": True,
        }
        structured = structured_outputs(request.constraint)
        if structured:
            body["structured_outputs"] = structured
        xargs = extra_args(request)
        if xargs:  # read by our logits processor when the server runs it (README: serving recipes)
            body["vllm_xargs"] = xargs
        return body

    def _result(self, answer: dict, request: GenerationRequest, server: _Server, seconds: float) -> GenerationResult:
        try:
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Failure("the answer has no choices[0].message", retryable=False) from None
        tokens = list(choice.get("token_ids") or [])
        usage = answer.get("usage") or {}
        finish = choice.get("finish_reason")
        # no tokenizer here: the loop is judged on the answer's characters
        text, reason, new_tokens, flags = finish_answer(tokens, text, finish, request, None, lambda kept: None)
        if not tokens:  # servers that do not return token ids: count what they report
            new_tokens = int(usage.get("completion_tokens") or 0)
        return GenerationResult(
            text=text, finish_reason=reason, prompt_tokens=int(usage.get("prompt_tokens") or 0),
            new_tokens=new_tokens, image_tokens=request.tiles * self.info.image_seq_length, seconds=seconds,
            flags=flags)

    # ------------------------------------------------------------------ servers and retries

    def _choose(self) -> _Server | None:
        """The live server with the fewest requests in flight (resting ones only when all rest)."""
        now = time.monotonic()
        with self._lock:
            live = [s for s in self.servers if s.resting_until <= now]
            if not live:
                return None
            server = min(live, key=lambda s: (s.in_flight, s.failures))
            server.in_flight += 1
            return server

    def _succeeded(self, server: _Server) -> None:
        with self._lock:
            server.failures = 0

    def _failed(self, server: _Server, failure: _Failure) -> None:
        if failure.status is not None and failure.status < 500 and failure.status != 429:
            return  # the request's fault, not the server's
        with self._lock:
            server.failures += 1
            server.resting_until = time.monotonic() + self._backoff(server.failures - 1)

    def _until_one_is_back(self) -> float:
        with self._lock:
            wait = min(s.resting_until for s in self.servers) - time.monotonic()
        return min(self.retry.max_delay, max(0.01, wait))

    def _backoff(self, attempt: int) -> float:
        delay = min(self.retry.max_delay, self.retry.base_delay * 2 ** attempt)
        return delay * (0.5 + random.random() / 2)

    def _call(self, server: _Server, method: str, path: str, body: dict | None, timeout: float) -> dict:
        parsed = urllib.parse.urlsplit(server.endpoint(path))
        connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parsed.hostname, parsed.port, timeout=timeout)
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, dropped mid-answer
            raise _Failure(f"{server.url}: {type(exc).__name__}: {exc}", retryable=True) from None
        finally:
            connection.close()
        if response.status >= 400:
            raise _Failure(f"{server.url}: HTTP {response.status}: {_error_text(payload)}",
                           retryable=response.status in RETRYABLE_STATUS, status=response.status)
        try:
            return json.loads(payload)
        except ValueError:
            raise _Failure(f"{server.url}: the answer is not JSON", retryable=True) from None


def _normalise_url(url: str) -> str:
    """`host:port`, `http://host:port` and `http://host:port/v1` all name the same OpenAI base URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--server {url}: not an http(s) URL")
    return url if parsed.path.endswith("/v1") else url + "/v1"


def _data_url(png: bytes) -> str:
    """Lossless (the server's tiler sees our pixels); see documents/encoded.py for the encoder's choice."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _error_text(payload: bytes) -> str:
    try:
        data = json.loads(payload)
        message = data.get("error", data)
        message = message.get("message", message) if isinstance(message, dict) else message
        return " ".join(str(message).split())[:300]
    except ValueError:
        return " ".join(payload.decode("utf-8", "replace").split())[:300]
