"""`--engine server` against a misbehaving OpenAI-compatible server (tests/fake_server.py on 127.0.0.1): no
document is ever done with a hole, a dead server ends the run fast with exit 12, a stop abandons what is in
flight, answers are bounded, secrets never show, and bad options are usage errors before anything runs."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, SAMPLES, make_inbox
from fake_server import FakeOpenAI
from internvl_cli.engine.server import RETRY_AFTER_CAP, ServerEngine, _Failure
from internvl_cli.errors import ExitCode


@pytest.fixture()
def fake():
    """Starts fake servers (keyword arguments as FakeOpenAI's); every one is stopped at teardown."""
    started: list[FakeOpenAI] = []

    def start(**kwargs) -> FakeOpenAI:
        server = FakeOpenAI(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if not server.stopped.is_set():
            server.stop()


def ledger_rows(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        return sorted((Path(source).name, status) for source, status in
                      db.execute("SELECT source_path, status FROM jobs").fetchall())


def ten_page_tiff(path: Path) -> Path:
    frames = [Image.new("RGB", (300 + 20 * i, 400), (i, i, i)) for i in range(10)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def serve_args(server: FakeOpenAI, *more) -> list:
    return ["--engine", "server", "--server", server.url, "--model", "tiny", *more]


# ------------------------------------------------------------------------------------------------ no holes

def test_a_page_the_server_never_answered_leaves_its_document_undone_and_a_rerun_completes_it(cli, fake, tmp_path):
    server = fake()
    doc = ten_page_tiff(tmp_path / "ten.tiff")
    out = tmp_path / "out"
    server.plan("ok", "ok", *["malformed"] * 6)  # the third page gets a bad answer on every try
    code, _, err = cli("ocr", doc, "-o", out, *serve_args(server, "--concurrency", "1"))
    assert code == ExitCode.SERVER, err
    assert "bad answer" in err and "no server could be reached" not in err
    assert ledger_rows(out) == [("ten.tiff", "failed")]
    assert not (out / "ten.tiff.md").exists()
    code, stdout, _ = cli("status", out)
    assert "failed: " in stdout and "bad answer" in stdout
    code, _, err = cli("ocr", doc, "-o", out, *serve_args(server))  # the server is healthy now
    assert code == 0, err
    assert ledger_rows(out) == [("ten.tiff", "done")]
    text = (out / "ten.tiff.md").read_text()
    assert [text.count(f"page: {n}/10 ") for n in range(1, 11)] == [1] * 10  # every page exactly once


def test_retry_failed_redoes_a_document_a_server_failed(cli, fake, tmp_path):
    server = fake()
    inbox = make_inbox(tmp_path / "inbox", 2)
    out = tmp_path / "out"
    server.plan(*["malformed"] * 6)  # the first page's every try
    code, _, err = cli("ocr", inbox, "-o", out, *serve_args(server, "--concurrency", "1"))
    assert code == ExitCode.PARTIAL, err  # one document done, one failed
    assert ledger_rows(out) == [("doc00.png", "failed"), ("doc01.png", "done")]
    calls = server.calls
    code, _, err = cli("ocr", inbox, "-o", out, "--retry-failed", *serve_args(server))
    assert code == 0, err
    assert server.calls == calls + 1  # only the failed document's page was asked again
    assert ledger_rows(out) == [("doc00.png", "done"), ("doc01.png", "done")]


def test_a_page_the_server_is_too_slow_for_says_timed_out(cli, fake, tmp_path):
    server = fake(slow_seconds=30)
    server.always("slow")
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, _, err = cli("ocr", page, *serve_args(server, "--request-timeout", "1"))
    assert code == ExitCode.SERVER
    assert "timed out" in err and "no server could be reached" not in err


def test_the_fault_mix_ends_with_every_document_done_exactly_once(cli, fake, tmp_path):
    server = fake()
    inbox = make_inbox(tmp_path / "inbox", 6)
    server.plan("503", "reset", "truncated", "malformed", "ok", "503", "reset", "truncated", "malformed")
    out = tmp_path / "out"
    code, _, err = cli("ocr", inbox, "-o", out, *serve_args(server, "--concurrency", "3"))
    assert code == 0, err
    assert ledger_rows(out) == [(f"doc{i:02d}.png", "done") for i in range(6)]
    assert all((out / f"doc{i:02d}.png.md").read_text().count("page of ") == 1 for i in range(6))


def test_status_shows_documents_with_failed_pages(cli, tmp_path):
    from internvl_cli.runs.ledger import Ledger

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.md").write_text("x")
    with Ledger.open(out) as ledger:
        ledger.mark_running("h1", "t1", source="scans/a.pdf", output_path=out / "a.md", run_id="r1")
        ledger.mark_done("h1", "t1", output_path=out / "a.md", pages=20, seconds=1.0, pages_failed=1)
    code, stdout, _ = cli("status", out)
    assert code == 0 and "scans/a.pdf: 1 of 20 pages failed" in stdout


# ------------------------------------------------------------------------------------------------ fail fast

def test_the_only_server_dying_ends_the_run_with_12_fast_and_a_rerun_against_it_revived_finishes(cli, fake,
                                                                                                tmp_path):
    server = fake(die_after=3)
    inbox = make_inbox(tmp_path / "inbox", 10)
    out = tmp_path / "out"
    started = time.monotonic()
    code, _, err = cli("ocr", inbox, "-o", out, *serve_args(server, "--concurrency", "1"))
    assert time.monotonic() - started < 30
    assert code == ExitCode.SERVER, err
    assert err.count("is down") == 1 and "no server is live" in err and "refused" in err
    done = [name for name, status in ledger_rows(out) if status == "done"]
    assert 3 <= len(done) < 10
    revived = fake(port=server.port)
    code, _, err = cli("ocr", inbox, "-o", out, *serve_args(revived))
    assert code == 0, err
    assert ledger_rows(out) == [(f"doc{i:02d}.png", "done") for i in range(10)]


def test_a_server_down_from_the_start_is_said_once_and_the_others_do_the_work(cli, fake, tmp_path):
    dead = fake()
    dead.stop()  # its port now refuses connections
    live = fake()
    inbox = make_inbox(tmp_path / "inbox", 4)
    code, _, err = cli("ocr", inbox, "-o", tmp_path / "out", "--engine", "server", "--server", dead.url,
                       "--server", live.url, "--model", "tiny")
    assert code == 0, err
    assert err.count(f"{dead.url} is down") == 1 and "refused" in err
    assert len(live.answered) == 4 and dead.calls == 0


def test_a_down_server_is_probed_with_get_models_and_said_back_once_it_answers(fake, caplog):
    server = fake()
    engine = ServerEngine([server.url], "tiny")
    state = engine.servers[0]
    engine._mark_down(state, _Failure("refused", retryable=True, kind="refused"))
    state.probe_at = 0.0  # due now
    with caplog.at_level("WARNING", logger="internvl_cli.engine"):
        chosen = engine._choose()
    assert chosen is state and not state.down
    assert server.model_calls == 1 and server.calls == 0  # probed, not paid for with a page
    assert [r.getMessage() for r in caplog.records if "is back" in r.getMessage()] == [f"{server.url} is back"]


def test_retry_after_is_honoured_and_capped():
    engine = ServerEngine(["127.0.0.1:9"], "tiny")
    server = engine.servers[0]
    engine._failed(server, _Failure("busy", retryable=True, status=503, kind="error", retry_after=5.0))
    assert server.resting_until - time.monotonic() > 4.5
    engine._failed(server, _Failure("busy", retryable=True, status=503, kind="error", retry_after=1e9))
    assert server.resting_until - time.monotonic() <= RETRY_AFTER_CAP


def test_requests_share_kept_alive_connections(cli, fake, tmp_path):
    server = fake()
    inbox = make_inbox(tmp_path / "inbox", 8)
    code, _, err = cli("ocr", inbox, "-o", tmp_path / "out", *serve_args(server, "--concurrency", "2"))
    assert code == 0, err
    assert len(server.answered) == 8 and len(server.connections) <= 2


# ------------------------------------------------------------------------------------------------ stopping

@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, ExitCode.TERMINATED), (signal.SIGINT, ExitCode.INTERRUPTED)])
def test_sigterm_or_ctrl_c_with_32_requests_in_flight_exits_within_5_s_and_a_rerun_finishes(fake, tmp_path, stop, code):
    """SIGTERM, or SIGINT as Ctrl-C sends it."""
    server = fake(slow_seconds=120)
    server.always("slow")
    inbox = make_inbox(tmp_path / "inbox", 40)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "internvl_cli.cli", "ocr", str(inbox), "-o", str(out),
               *serve_args(server, "--concurrency", "32")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(1200):  # up to 60 s for the run to start and fill the pipe
            if server.calls >= 32 or process.poll() is not None:
                break
            time.sleep(0.05)
        assert server.calls >= 32, process.stderr.read().decode() if process.poll() is not None else "not started"
        stopped = time.monotonic()
        process.send_signal(stop)
        process.wait(timeout=30)
        assert time.monotonic() - stopped < 5
        assert process.returncode == code
        assert "is down" not in process.stderr.read().decode()  # abandoned requests are not the server's fault
        statuses = [status for _, status in ledger_rows(out)]
        assert "done" not in statuses and statuses  # what was on the wire is left to redo, never done
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    server.always("ok")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert ledger_rows(out) == [(f"doc{i:02d}.png", "done") for i in range(40)]


# ------------------------------------------------------------------------------------------------ answers

def test_a_5_mb_answer_is_cut_and_flagged(cli, fake, tmp_path):
    server = fake()
    server.plan("huge")
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, stdout, err = cli("ocr", page, "--format", "jsonl", *serve_args(server, "--max-new-tokens", "256"))
    assert code == 0, err
    record = json.loads(stdout)
    assert record["flags"].count("truncated") == 1
    assert 1000 < len(record["text"]) <= 256 * 32 + 64 * 1024
    assert record["text"].startswith("w0 w1 w2")


def test_an_empty_answer_is_asked_again_then_flagged(cli, fake, tmp_path):
    server = fake()
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    server.plan("null")  # once: the second try answers
    code, stdout, err = cli("ocr", page, "--format", "jsonl", *serve_args(server))
    assert code == 0 and json.loads(stdout)["text"].startswith("page of ") and not json.loads(stdout)["flags"]
    server.plan("empty", "empty")
    code, stdout, err = cli("ocr", page, "--format", "jsonl", *serve_args(server))
    assert code == 0 and json.loads(stdout)["flags"] == ["empty-answer"]


def test_an_answer_in_reasoning_content_is_used_and_reported(cli, fake, tmp_path):
    server = fake()
    server.always("reasoning")
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, stdout, err = cli("ocr", page, "--format", "jsonl", *serve_args(server))
    assert code == 0 and json.loads(stdout)["text"].startswith("page of ")
    assert "reasoning_content" in err


# ------------------------------------------------------------------------------------------------ auth

def secrets_absent(secret: str, out: Path, *texts: str) -> None:
    for text in texts:
        assert secret not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_an_api_key_reaches_the_server_and_appears_nowhere(cli, fake, tmp_path, monkeypatch):
    key = "sk-Kq7-secret-key-0451"
    server = fake(api_key=key)
    inbox = make_inbox(tmp_path / "inbox", 2)
    out = tmp_path / "out"
    code, stdout, err = cli("-v", "ocr", inbox, "-o", out, *serve_args(server, "--api-key", key))
    assert code == 0, err
    secrets_absent(key, out, stdout, err)
    code, _, err = cli("-v", "ocr", inbox, "-o", tmp_path / "out2", *serve_args(server))
    assert code == ExitCode.SERVER and "unauthorised" in err
    secrets_absent(key, tmp_path / "out2", err)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    code, stdout, err = cli("-v", "ocr", inbox, "-o", tmp_path / "out3", "--format", "jsonl", *serve_args(server))
    assert code == 0, err
    secrets_absent(key, tmp_path / "out3", stdout, err)


def test_credentials_in_the_url_go_as_basic_auth_and_are_never_shown(cli, fake, tmp_path):
    server = fake(basic="alice:pw-s3cret-77")
    inbox = make_inbox(tmp_path / "inbox", 2)
    out = tmp_path / "out"
    url = f"http://alice:pw-s3cret-77@127.0.0.1:{server.port}/v1"
    code, stdout, err = cli("-v", "ocr", inbox, "-o", out, "--engine", "server", "--server", url, "--model", "tiny")
    assert code == 0, err
    secrets_absent("pw-s3cret-77", out, stdout, err)
    wrong = f"http://alice:wrong-pw-99@127.0.0.1:{server.port}/v1"
    code, stdout, err = cli("-v", "ocr", inbox, "--engine", "server", "--server", wrong, "--model", "tiny")
    assert code == ExitCode.SERVER and "unauthorised" in err and "wrong-pw-99" not in err


# ------------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:abc", "port"), ("http://127.0.0.1:99999", "port"), ("127.0.0.1:0", "port"),
    ("http://[::1", "IPv6"), ("http://h:8000/v1?key=x", "query"), ("ftp://h:21", "http"),
    ("http://user:hunter2@h:99999/v1", "port"), ("http://:8000/v1", "host"),
])
def test_a_bad_server_url_is_a_usage_error(cli, tmp_path, url, says):
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, stdout, err = cli("ocr", page, "--engine", "server", "--server", url)
    assert code == ExitCode.BAD_ARGS and says in err and "Traceback" not in err and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "hunter2" not in err


@pytest.mark.parametrize("option, value", [("--concurrency", "100000"), ("--concurrency", "0"),
                                           ("--request-timeout", "inf"), ("--request-timeout", "nan"),
                                           ("--request-timeout", "0"), ("--request-timeout", "-1")])
def test_out_of_range_server_options_are_usage_errors(cli, tmp_path, option, value):
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, _, err = cli("ocr", page, "--engine", "server", "--server", "127.0.0.1:9", option, value)
    assert code == ExitCode.BAD_ARGS and option in err and "Traceback" not in err


def test_a_chat_completions_url_is_understood_as_its_base():
    for url in ("http://h:8000/v1/chat/completions", "h:8000/v1/", "http://h:8000", "http://h:8000/v1/models"):
        assert ServerEngine([url], "tiny").servers[0].url == "http://h:8000/v1"
    assert ServerEngine(["http://[::1]:8000/v1"], "tiny").servers[0].url == "http://[::1]:8000/v1"


@pytest.mark.parametrize("models", [["tiny"], {"data": ["tiny"]}, [{"id": "tiny"}], {"data": [{"id": "tiny"}]}])
def test_models_lists_of_any_shape_are_read(cli, fake, tmp_path, models):
    server = fake(models=models)
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, stdout, err = cli("ocr", page, "--format", "jsonl", "--engine", "server", "--server", server.url)
    assert code == 0, err
    record = json.loads(stdout)
    assert record["text"].startswith("page of ")
    assert record["model"] == "tiny"  # without --model, the model the server serves, not the default preset


@pytest.mark.parametrize("models, says", [({"object": "list"}, "bad answer"), ({"data": []}, "no models"),
                                          ("hello", "bad answer")])
def test_an_odd_models_answer_is_exit_12_with_what_it_said(cli, fake, tmp_path, models, says):
    server = fake(models=models)
    page = tmp_path / "a.png"
    page.write_bytes((SAMPLES / "chart.png").read_bytes())
    code, _, err = cli("ocr", page, "--engine", "server", "--server", server.url)
    assert code == ExitCode.SERVER and says in err and "Traceback" not in err
