"""Step 3g, the client of OpenAI-compatible servers (`vllm serve`, LMDeploy, SGLang): many requests in flight,
spread over one or more servers, retried with backoff; the same pages, tiles and flags as in-process engines.

Each page goes as a PNG data URL at the grid's pixel size (lossless, so the server's tiler sees our pixels;
encoded once, by the run's render workers when it has them)
with our tile budget in `mm_processor_kwargs`, constraints in `structured_outputs` and loop/wrap-up settings
as vLLM's extra fields (other servers ignore what they do not know). Connection errors, timeouts, 429 and 5xx
are retried on the least busy live server; a server that fails is rested (its `Retry-After` honoured), and
after `down_after` failures in a row it is down: probed with GET /models on a backoff, never with pages, until
it answers again. When no server has been live for `give_up_after` seconds the stream raises ServerError.
Each worker thread keeps one connection per server open (keep-alive); stopping closes them all from the
stopping thread, so requests on the wire are abandoned at once instead of waited for.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import queue
import random
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import ServerError, UsageError
from ..flags import Flag
from .base import BatchLimits, Engine, GenerationRequest, GenerationResult, Outcome, RequestSource, Tag
from .batching import generate_in_order
from ..models.info import CheckpointInfo
from .vllm_requests import encoded_pictures, extra_args, finish_answer, sampling_fields, structured_outputs, tile_budget

_log = logging.getLogger("internvl_cli.engine")

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
UNAUTHORISED_STATUS = {401, 403}
MAX_CONCURRENCY = 1024  # threads, each holding a page's raster and a connection: beyond this memory runs out first
# An answer is read up to this many bytes per token of its max_tokens, plus headroom for the JSON around it: a
# token is at most a few characters, and JSON writes a non-ASCII character as up to 12 bytes (a surrogate pair of
# \uXXXX escapes); the token ids some servers return add ~8 bytes each. More than that is not a real answer.
BYTES_PER_TOKEN = 32
ANSWER_HEADROOM = 64 * 1024
MODELS_LIMIT = 1024 * 1024  # GET /models answers are small; a bigger one is not one
RETRY_AFTER_CAP = 30.0  # seconds: a server asking for more is treated as resting this long, then asked again


@dataclass
class _Server:
    url: str  # base URL ending in /v1, without credentials: what messages show
    authorization: str | None = None  # the Authorization header sent to it (never printed)
    in_flight: int = 0
    resting_until: float = 0.0
    failures: int = 0  # in a row
    down: bool = False
    probe_at: float = 0.0
    probes: int = 0
    probing: bool = False
    reported: str | None = None  # the last failure's message, for the run's last word

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + path


@dataclass
class RetryPolicy:
    attempts: int = 6  # tries per request, over all servers (waits while no server is live are not tries)
    base_delay: float = 0.5  # seconds; doubled per failure, with jitter, at most max_delay
    max_delay: float = 8.0
    timeout: float = 600.0  # seconds per request (a long page on a busy server takes minutes)
    down_after: int = 3  # failures in a row that take a server down (probed, not sent pages)
    give_up_after: float = 20.0  # seconds with no live server before the run stops (exit 12)
    probe_timeout: float = 5.0


@dataclass
class _Failure(Exception):
    message: str
    retryable: bool
    status: int | None = None
    kind: str = "bad answer"  # unreachable, refused, timed out, dropped, bad answer, unauthorised, error
    retry_after: float | None = None
    details: list[str] = field(default_factory=list)


class ServerEngine(Engine):
    """Pages sent to OpenAI-compatible chat-completions endpoints; `--concurrency` requests in flight."""

    name = "server"

    def __init__(self, urls: list[str], model: str | None, info: CheckpointInfo | None = None,
                 concurrency: int = 32, retry: RetryPolicy = RetryPolicy(), api_key: str | None = None):
        if not urls:
            raise UsageError("--engine server needs at least one --server URL (e.g. http://127.0.0.1:8000/v1)")
        check_concurrency(concurrency)
        check_timeout(retry.timeout)
        self.servers = [_server(url, api_key) for url in urls]
        self.requested_model = model
        # fixed before any server is asked (it is part of the ledger's task hash); records name the served model
        self.model_id = model or "served"
        self.served_model: str | None = None  # the name requests carry, read from the servers on load()
        # a local checkpoint's own facts when --model names one, else InternVL's standard tiles
        self.info = info or CheckpointInfo.standard(self.model_id)
        self.concurrency = concurrency
        self.retry = retry
        self._lock = threading.Lock()
        self._loaded = False
        self._stop: threading.Event | None = None
        self._local = threading.local()  # each worker's connections, one per server
        self._open: set[http.client.HTTPConnection] = set()  # every open connection, to close them on stop
        self._noted_reasoning = False
        self._all_down_since: float | None = None

    @property
    def context_length(self) -> int | None:
        """Unknown: each server runs the model with its own context (`vllm serve --max-model-len`)."""
        return None

    def stop_on(self, event: threading.Event) -> None:
        self._stop = event

    # ------------------------------------------------------------------ connecting

    def load(self) -> None:
        """Asks every server which models it serves; fails with exit code 12 when none answers."""
        if self._loaded:
            return
        served: dict[str, list[str]] = {}
        problems: list[tuple[_Server, _Failure]] = []
        for server in self.servers:
            try:
                served[server.url] = _model_names(self._get_models(server, min(30.0, self.retry.timeout)))
            except _Failure as failure:
                problems.append((server, failure))
        if not served:
            raise ServerError("no server answered: " + "; ".join(failure.message for _, failure in problems),
                              hint="check --server URLs, --api-key and that `vllm serve` has finished loading")
        for server, failure in problems:  # down from the start: said once, probed like one that died
            self._mark_down(server, failure)
        self.served_model = self._pick_model(served)
        self._loaded = True

    def _pick_model(self, served: dict[str, list[str]]) -> str:
        names = {name for names in served.values() for name in names}
        wanted = self.requested_model
        if not names:
            raise ServerError("the servers list no models at GET /models", hint="pass the served name with --model")
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
        """Daemon worker threads (started as needed, `concurrency` at most) take requests from a queue; leaving
        the stream closes every connection, so what is on the wire is abandoned at once, and nothing joins them."""
        self.load()
        todo: queue.Queue = queue.Queue()
        done: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        workers = 0
        in_flight = 0
        try:
            while not self._stopping():
                while in_flight < self.concurrency:
                    item = source.take(wait=False) if in_flight else self._take_waiting(source)
                    if item is None:
                        break
                    todo.put(item)
                    in_flight += 1
                    if workers < in_flight:
                        threading.Thread(target=self._work, args=(todo, done, cancelled), daemon=True,
                                         name=f"internvl-server-{workers}").start()
                        workers += 1
                if in_flight == 0:
                    if source.done:
                        return
                    continue
                self._check_live()
                try:
                    tag, outcome = done.get(timeout=0.1)  # short, so newly prepared pages are sent promptly
                except queue.Empty:
                    continue
                in_flight -= 1
                yield tag, outcome
        finally:
            cancelled.set()
            self._close_all()

    def _take_waiting(self, source: RequestSource):
        """A blocking take that still notices a stop (the source wakes up every 0.2 s)."""
        return None if self._stopping() else source.take(wait=True)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _work(self, todo: queue.Queue, done: queue.Queue, cancelled: threading.Event) -> None:
        while not cancelled.is_set():
            try:
                tag, request = todo.get(timeout=0.2)
            except queue.Empty:
                continue
            outcome = self._run_one(request, cancelled)
            if not cancelled.is_set():
                done.put((tag, outcome))
        self._close_mine()

    def _run_one(self, request: GenerationRequest, cancelled: threading.Event) -> Outcome:
        started = time.perf_counter()
        try:
            return self._complete(request, started, cancelled)
        except ServerError as error:
            return error
        except Exception as exc:  # a bug in translation: fail this page, not the run
            return ServerError(f"unexpected {type(exc).__name__}: {exc}")

    def _complete(self, request: GenerationRequest, started: float,
                  cancelled: threading.Event | None = None) -> GenerationResult:
        """Sends one request until it succeeds, `attempts` tries at most; a failed server rests (growing
        backoff, or its Retry-After) while the next try goes to another live one. An empty answer is asked
        for once more before it is kept (flagged empty-answer)."""
        body = self.request_payload(request)
        last: _Failure | None = None
        tries = 0
        empty: GenerationResult | None = None
        while tries < self.retry.attempts:
            if cancelled is not None and cancelled.is_set():
                raise ServerError("stopped")
            server = self._choose()
            if server is None:
                time.sleep(self._until_one_is_back())
                continue
            tries += 1
            try:
                answer, cut = self._call(server, "POST", "/chat/completions", body, timeout=self.retry.timeout,
                                         limit=_answer_limit(request))
                result = self._result(answer, cut, request, server, time.perf_counter() - started)
                self._succeeded(server)
            except _Failure as failure:
                if cancelled is not None and cancelled.is_set():
                    raise ServerError("stopped") from None  # its connection was closed by the stop, not the server
                self._failed(server, failure)
                last = failure
                if not failure.retryable:
                    break
                continue
            finally:
                with self._lock:
                    server.in_flight -= 1
            if Flag.EMPTY_ANSWER in result.flags and empty is None:
                empty = result  # once more: an empty page is more often a hiccup than a blank page
                continue
            return result
        if empty is not None:
            return empty
        assert last is not None
        raise ServerError(last.message)

    def request_body(self, request: GenerationRequest) -> dict:
        """The OpenAI chat-completions body for one request (vLLM's extra fields included)."""
        return self._body(request, [_data_url(png) for png in encoded_pictures(request)])

    def request_payload(self, request: GenerationRequest) -> bytes:
        """request_body as the JSON bytes sent: each picture's base64 is spliced in as bytes, so its ~1 MB is
        neither scanned by json nor copied between str and bytes (~1.5 ms of the run's own CPU per page)."""
        pictures = encoded_pictures(request)
        mark = f"internvl-picture-{secrets.token_hex(16)}"  # cannot occur in a prompt by chance
        pieces = json.dumps(self._body(request, [mark] * len(pictures))).encode("ascii").split(mark.encode())
        if len(pieces) != len(pictures) + 1:
            raise ValueError("a picture's place in the request body was not found once")
        spliced = [pieces[0]]
        for png, after in zip(pictures, pieces[1:]):
            spliced += [DATA_URL_PREFIX, base64.b64encode(png), after]
        return b"".join(spliced)

    def _body(self, request: GenerationRequest, urls: list[str]) -> dict:
        content: list[dict] = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
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

    def _result(self, answer: dict, cut: bool, request: GenerationRequest, server: _Server,
                seconds: float) -> GenerationResult:
        try:
            choice = answer["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Failure(f"{server.url}: bad answer: no choices[0].message in it", retryable=True) from None
        flags: list[Flag] = []
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if not text and isinstance(reasoning, str) and reasoning:
            text = reasoning  # a reasoning parser on the server moved the whole answer there
            self._note_reasoning(server)
        if not isinstance(text, str):
            raise _Failure(f"{server.url}: bad answer: its content is not text", retryable=True)
        tokens = list(choice.get("token_ids") or []) if isinstance(choice.get("token_ids"), list) else []
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        finish = "length" if cut else choice.get("finish_reason")
        # no tokenizer here: the loop is judged on the answer's characters
        text, reason, new_tokens, more = finish_answer(tokens, text, finish, request, None, lambda kept: None)
        flags += more  # a cut answer finishes as "length": tasks flag it truncated
        if not text.strip():
            flags.append(Flag.EMPTY_ANSWER)
        if not tokens:  # servers that do not return token ids: count what they report
            new_tokens = _int(usage.get("completion_tokens"))
        return GenerationResult(
            text=text, finish_reason=reason, prompt_tokens=_int(usage.get("prompt_tokens")),
            new_tokens=new_tokens, image_tokens=request.tiles * self.info.image_seq_length, seconds=seconds,
            flags=flags, model=self.served_model)

    def _note_reasoning(self, server: _Server) -> None:
        with self._lock:
            if self._noted_reasoning:
                return
            self._noted_reasoning = True
        _log.warning(f"{server.url} put the answer in reasoning_content, not content (a reasoning parser is on); "
                     "using it")

    # ------------------------------------------------------------------ servers, health and retries

    def _choose(self) -> _Server | None:
        """The live server with the fewest requests in flight (None while all rest or are down). A down
        server whose probe is due is probed first, by this thread, one probe at a time."""
        self._probe_due()
        now = time.monotonic()
        with self._lock:
            live = [s for s in self.servers if not s.down and s.resting_until <= now]
            if not live:
                return None
            server = min(live, key=lambda s: (s.in_flight, s.failures))
            server.in_flight += 1
            return server

    def _probe_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = next((s for s in self.servers if s.down and not s.probing and s.probe_at <= now), None)
            if due is None:
                return
            due.probing = True
        try:
            _model_names(self._get_models(due, self.retry.probe_timeout))
        except _Failure as failure:
            with self._lock:
                due.probes += 1
                due.probe_at = time.monotonic() + self._backoff(due.probes)
                due.reported = failure.message
            return
        finally:
            with self._lock:
                due.probing = False
        with self._lock:
            due.down, due.failures, due.probes, due.resting_until = False, 0, 0, 0.0
        _log.warning(f"{due.url} is back")

    def _check_live(self) -> None:
        """Raises ServerError once no server has been live for `give_up_after` seconds."""
        now = time.monotonic()
        with self._lock:
            if not all(s.down for s in self.servers):
                self._all_down_since = None
                return
            since = self._all_down_since or now
            self._all_down_since = since
            reasons = "; ".join(s.reported or s.url for s in self.servers)
        if now - since >= self.retry.give_up_after:
            raise ServerError(f"no server is live ({reasons}); stopped, the rest stays pending for the next run")

    def _succeeded(self, server: _Server) -> None:
        with self._lock:
            server.failures = 0

    def _failed(self, server: _Server, failure: _Failure) -> None:
        if failure.status is not None and failure.status < 500 and failure.status not in (429, 408) \
                and failure.status not in UNAUTHORISED_STATUS:
            return  # the request's fault, not the server's
        with self._lock:
            server.failures += 1
            server.reported = failure.message
            rest = self._backoff(server.failures - 1)
            if failure.retry_after is not None:
                rest = max(rest, min(RETRY_AFTER_CAP, failure.retry_after))
            server.resting_until = time.monotonic() + rest
            going_down = not server.down and (server.failures >= self.retry.down_after
                                              or failure.kind == "unauthorised")
        if going_down:
            self._mark_down(server, failure)

    def _mark_down(self, server: _Server, failure: _Failure) -> None:
        with self._lock:
            if server.down:
                return
            server.down, server.probes, server.reported = True, 0, failure.message
            server.probe_at = time.monotonic() + self._backoff(0)
        _log.warning(f"{server.url} is down ({failure.message}); probing it, pages go to the others")

    def _until_one_is_back(self) -> float:
        with self._lock:
            waits = [s.resting_until for s in self.servers if not s.down] or [
                s.probe_at for s in self.servers]
            wait = min(waits) - time.monotonic()
        return min(0.5, max(0.01, wait))

    def _backoff(self, attempt: int) -> float:
        delay = min(self.retry.max_delay, self.retry.base_delay * 2 ** attempt)
        return delay * (0.5 + random.random() / 2)

    # ------------------------------------------------------------------ HTTP

    def _get_models(self, server: _Server, timeout: float) -> object:
        connection = _connect(server, timeout)
        try:
            return self._exchange(connection, server, "GET", "/models", None, MODELS_LIMIT)[0]
        finally:
            connection.close()

    def _call(self, server: _Server, method: str, path: str, body: bytes | None, timeout: float,
              limit: int) -> tuple[dict, bool]:
        """One request on this worker's kept-alive connection to `server` (opened again after any failure)."""
        connection, reused = self._connection(server, timeout)
        try:
            return self._exchange(connection, server, method, path, body, limit)
        except _Failure as failure:
            self._drop(server, connection)
            if not (reused and failure.kind == "dropped") or self._stopping():  # a stop closed it: no resend
                raise
        # a kept-alive connection the server had closed while idle: not the server's failure, one fresh try
        connection, _ = self._connection(server, timeout)
        try:
            return self._exchange(connection, server, method, path, body, limit)
        except _Failure:
            self._drop(server, connection)
            raise

    def _exchange(self, connection: http.client.HTTPConnection, server: _Server, method: str, path: str,
                  data: bytes | None, limit: int) -> tuple[object, bool]:
        """(the parsed JSON answer, whether it was cut at `limit` bytes) of sending the JSON `data`."""
        target = urllib.parse.urlsplit(server.endpoint(path)).path
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if server.authorization:
            headers["Authorization"] = server.authorization
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read(limit + 1)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, reset, timed out, cut short
            kind, reason = _transport_failure(exc, connection.timeout)
            raise _Failure(f"{server.url}: {kind}: {reason}", retryable=True, kind=kind) from None
        cut = len(payload) > limit
        if cut or response.will_close:
            self._drop(server, connection)  # the rest of a cut answer is never read: the connection goes
        if response.status in UNAUTHORISED_STATUS:
            raise _Failure(f"{server.url}: unauthorised (HTTP {response.status}: {_error_text(payload)})",
                           retryable=False, status=response.status, kind="unauthorised")
        if response.status >= 400:
            raise _Failure(f"{server.url}: answered HTTP {response.status}: {_error_text(payload)}",
                           retryable=response.status in RETRYABLE_STATUS, status=response.status, kind="error",
                           retry_after=_retry_after(response.getheader("Retry-After")))
        if cut:
            return _salvage(payload[:limit]), True
        try:
            return json.loads(payload), False
        except ValueError:
            raise _Failure(f"{server.url}: bad answer: not JSON", retryable=True) from None

    def _connection(self, server: _Server, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This worker's connection to `server`, and whether it was used before (kept alive)."""
        mine = self._local.__dict__.setdefault("connections", {})
        connection = mine.get(server.url)
        if connection is not None:
            return connection, True
        connection = mine[server.url] = _connect(server, timeout)
        with self._lock:
            self._open.add(connection)
        return connection, False

    def _drop(self, server: _Server, connection: http.client.HTTPConnection) -> None:
        mine = self._local.__dict__.get("connections", {})
        if mine.get(server.url) is connection:
            del mine[server.url]
        with self._lock:
            self._open.discard(connection)
        connection.close()

    def _close_mine(self) -> None:
        for connection in self._local.__dict__.pop("connections", {}).values():
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def _close_all(self) -> None:
        """Abandons every request on the wire: their sockets are shut from this thread, so a worker blocked
        reading an answer wakes with an error at once (its page stays pending)."""
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------------- URLs, options and answers

_CREDENTIALS = re.compile(r"(//)[^/@?#]*@")


def redact(text: str) -> str:
    """`text` with any `user:password@` of a URL in it replaced by `***@`."""
    return _CREDENTIALS.sub(r"\1***@", text)


def check_concurrency(concurrency: int) -> None:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}")


def check_timeout(seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--request-timeout must be a finite number of seconds above 0, not {seconds}")


def _server(url: str, api_key: str | None) -> _Server:
    base, credentials = _normalise_url(url)
    if credentials is not None:
        return _Server(base, "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii"))
    return _Server(base, f"Bearer {api_key}" if api_key else None)


def _normalise_url(url: str) -> tuple[str, str | None]:
    """(the OpenAI base URL without credentials, "user:password" when the URL carries them). `host:port`,
    `http://host:port`, `.../v1` and `.../v1/chat/completions` all name the same base URL."""
    text = url.strip()
    shown = redact(text)
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = urllib.parse.urlsplit(text)
        port = parsed.port
    except ValueError as exc:  # a port that is not a number or out of range, an unclosed IPv6 bracket
        raise UsageError(f"--server {shown}: {_url_problem(exc)}") from None
    if parsed.scheme not in ("http", "https"):
        raise UsageError(f"--server {shown}: not an http(s) URL")
    if not parsed.hostname:
        raise UsageError(f"--server {shown}: no host name")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--server {shown}: the port must be between 1 and 65535")
    if parsed.query or parsed.fragment or text.endswith(("?", "#")):
        raise UsageError(f"--server {shown}: a base URL takes no query string or fragment "
                         "(give e.g. http://host:8000/v1)")
    path = parsed.path.rstrip("/")
    for endpoint in ("/chat/completions", "/completions", "/models"):
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    if not path.endswith("/v1"):
        path += "/v1"
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    netloc = host + (f":{port}" if port is not None else "")
    credentials = None
    if parsed.username is not None or parsed.password is not None:
        credentials = (urllib.parse.unquote(parsed.username or "") + ":"
                       + urllib.parse.unquote(parsed.password or ""))
    return f"{parsed.scheme}://{netloc}{path}", credentials


def _url_problem(exc: ValueError) -> str:
    text = str(exc)
    if "IPv6" in text:
        return "an IPv6 address must be in closed brackets, e.g. http://[::1]:8000/v1"
    if "out of range" in text:
        return "the port must be between 1 and 65535"
    return "the port must be a number between 1 and 65535"


def _connect(server: _Server, timeout: float) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(server.url)
    connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    return connection_class(parsed.hostname, parsed.port, timeout=timeout)


def _transport_failure(exc: BaseException, timeout: float | None) -> tuple[str, str]:
    """What happened on the wire, in a user's words."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "nothing listens there (connection refused)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out", f"no answer within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, socket.gaierror):
        return "unreachable", f"the host name does not resolve ({exc.strerror or exc})"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                        http.client.IncompleteRead, ConnectionAbortedError)):
        return "dropped", f"the connection was closed mid-answer ({type(exc).__name__})"
    if isinstance(exc, http.client.HTTPException):
        return "bad answer", f"not an HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return "unreachable", exc.strerror or type(exc).__name__
    return "bad answer", type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (its date form is rare for APIs and taken as absent)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _answer_limit(request: GenerationRequest) -> int:
    return request.sampling.max_new_tokens * BYTES_PER_TOKEN + ANSWER_HEADROOM


_CONTENT = re.compile(rb'"content"\s*:\s*"')


def _salvage(prefix: bytes) -> dict:
    """The answer an over-long body began with: its `content` string as far as it arrived."""
    match = _CONTENT.search(prefix)
    text = ""
    if match:
        rest = prefix[match.end():].decode("utf-8", "ignore")
        for trim in range(0, 12):  # an escape or a character may have been cut in half
            try:
                text = json.loads('"' + rest[: len(rest) - trim] + '"')
                break
            except ValueError:
                continue
    return {"choices": [{"message": {"content": text}, "finish_reason": "length"}]}


def _model_names(body: object) -> list[str]:
    """Model ids from GET /models of any shape: OpenAI's {"data": [{"id": ...}]}, a bare list, ids as
    strings. Anything else is a bad answer."""
    entries = body.get("data", body.get("models")) if isinstance(body, dict) else body
    if not isinstance(entries, list):
        raise _Failure(f"bad answer at GET /models: expected a list of models, got {_shape(body)}", retryable=True)
    names = []
    for entry in entries:
        name = entry.get("id") or entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _shape(value: object) -> str:
    text = json.dumps(value)[:120] if not isinstance(value, (bytes, str)) else str(value)[:120]
    return f"{type(value).__name__} {text}"


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


DATA_URL_PREFIX = b"data:image/png;base64,"


def _data_url(png: bytes) -> str:
    """Lossless (the server's tiler sees our pixels); see documents/encoded.py for the encoder's choice."""
    return (DATA_URL_PREFIX + base64.b64encode(png)).decode("ascii")


def _error_text(payload: bytes) -> str:
    try:
        data = json.loads(payload)
        message = data.get("error", data) if isinstance(data, dict) else data
        message = message.get("message", message) if isinstance(message, dict) else message
        return " ".join(str(message).split())[:300]
    except ValueError:
        return " ".join(payload.decode("utf-8", "replace").split())[:300]
