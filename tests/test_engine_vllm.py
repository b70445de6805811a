"""The vLLM engines on a tiny random checkpoint of the real architecture (text head size 32, as vLLM's CPU
attention needs): in-process `--engine vllm` and `--engine server` against a real `vllm serve` started here.

Skipped where vLLM is not installed, except in CI (INTERNVL_REQUIRE_VLLM=1), where a missing vLLM fails.
One in-process engine and one server are shared by the whole module: each takes ~20-60 s to load on CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES, make_inbox

if os.environ.get("INTERNVL_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (CI: fail loudly instead of skipping)
else:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install \"internvl-cli[vllm]\")")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: small, two engines share this machine
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

NESTED = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string", "maxLength": 20},
        "total": {"type": "number"},
        "items": {"type": "array", "maxItems": 2,
                  "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                                             "qty": {"type": "integer"}},
                            "required": ["name", "qty"]}},
    },
    "required": ["vendor", "total", "items"],
}


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_native

    return build_tiny_native(tmp_path_factory.mktemp("ckpt32") / "tiny-internvl-32", text_head_dim=32)


@pytest.fixture(scope="module")
def vllm_engine(tiny32):
    from internvl_cli.engine import EngineSettings, load_engine

    engine = load_engine(str(tiny32), settings=EngineSettings(kind="vllm", max_images=6, max_num_seqs=8))
    engine.load()
    return engine


@pytest.fixture()
def cli_vllm(cli, vllm_engine, monkeypatch):
    """The CLI, with every vLLM engine it builds reusing the module's loaded vllm.LLM (the real construction
    path still runs: checkpoint resolution, configs, settings; only the ~30 s load is shared)."""
    from internvl_cli.engine import vllm as vllm_module

    def reuse(self):
        self._llm, self._tokenizer = vllm_engine._llm, vllm_engine._tokenizer
        self.max_num_seqs = vllm_engine.max_num_seqs

    monkeypatch.setattr(vllm_module.VllmEngine, "load", reuse)
    return cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVE_KEY = "sk-vllm-serve-key-3141"  # the module's server asks for it (vllm serve --api-key): every run passes it


@pytest.fixture(scope="module")
def vllm_server(tiny32, tmp_path_factory):
    """One real `vllm serve --api-key` for the module, on loopback, with our wrap-up processor and llguidance."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny32),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enforce-eager", "--max-num-seqs", "8", "--limit-mm-per-prompt", '{"image": 6, "video": 0}',
               "--structured-outputs-config.backend", "guidance", "--trust-request-mm-kwargs",
               # the largest budget requests may ask for, so vLLM sizes its encoder cache for 13 tiles
               "--mm-processor-kwargs", '{"crop_to_patches": true, "max_patches": 12}',
               "--logits-processors", "internvl_cli.decoding.vllm_processor:WrapUpLogitsProcessor",
               "--api-key", SERVE_KEY]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ready = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {SERVE_KEY}"})
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)  # polling until the server is up, not timing anything
    if proc.poll() is not None or time.monotonic() >= deadline:
        proc.kill()
        pytest.fail("vllm serve did not come up:\n" + log.read_text(errors="replace")[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def multipage_pdf(path: Path, sizes: list[tuple[float, float]]) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for number, (width, height) in enumerate(sizes, 1):
        page = doc.new_page(width=width, height=height)
        page.insert_text((40, 60), f"Page {number}: Invoice 2024-00{number}, total 12.50 EUR")
    doc.save(path)
    return path


# ------------------------------------------------------------------------------------------ same tiles


SHAPES = [(448, 448), (1000, 700), (300, 900), (1240, 1754), (2000, 500), (500, 2000), (1754, 1240),
          (640, 480), (100, 100), (3000, 3000), (900, 1200), (1344, 448)]


@pytest.mark.parametrize("max_tiles", [12, 6])
def test_prompt_tokens_equal_our_tiles_and_prompt(vllm_engine, max_tiles):
    """vLLM's own tiler, given our raster and budget, picks our grid: its prompt token count equals
    256 x tiles + text as our prompt builder and the checkpoint's tokenizer count them."""
    import numpy as np
    from PIL import Image

    from internvl_cli.documents.tiling import prepare_image
    from internvl_cli.engine.base import GenerationRequest, Sampling
    from internvl_cli.models.prompting import build_prompt

    tiling = vllm_engine.tiling.with_limits(None, max_tiles)
    requests = []
    for width, height in SHAPES:
        pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
        requests.append(GenerationRequest(images=[prepare_image(Image.fromarray(pixels), tiling)],
                                          text="Transcribe this page.", sampling=Sampling(max_new_tokens=1)))
    results = vllm_engine.generate(requests)
    tokenizer = vllm_engine._tokenizer
    for (width, height), request, result in zip(SHAPES, requests, results):
        ours = build_prompt(tokenizer, request.text, [request.tiles], 256)
        expected = len(tokenizer(ours, add_special_tokens=False)["input_ids"])
        assert result.prompt_tokens == expected, (width, height, request.images[0].plan)
        assert result.image_tokens == 256 * request.tiles


# ------------------------------------------------------------------------------------------ in-process


def test_ocr_multipage_pdf_records_match_the_hf_engine(cli_vllm, tiny32, tmp_path):
    pdf = multipage_pdf(tmp_path / "three.pdf", [(595, 842), (842, 595), (300, 300)])
    runs = {}
    for engine in ("hf", "vllm"):
        code, stdout, err = cli_vllm("ocr", pdf, "--engine", engine, "--model", tiny32, "--format", "jsonl",
                                     "--max-new-tokens", "24")
        assert code == 0, err
        runs[engine] = [json.loads(line) for line in stdout.splitlines()]
    hf, vl = runs["hf"], runs["vllm"]
    assert [r["page"] for r in vl] == [1, 2, 3] and all(r["pages"] == 3 for r in vl)
    for a, b in zip(hf, vl):
        assert set(a) == set(b)
        assert (a["tiles"], a["grid"], a["image_tokens"], a["source"]) == (b["tiles"], b["grid"], b["image_tokens"],
                                                                           b["source"])
        assert set(b["flags"]) <= {"repetition", "truncated", "retried"}


def test_chart_csv_and_extract_nested_schema(cli_vllm, tiny32, tmp_path):
    code, stdout, err = cli_vllm("chart", SAMPLES / "chart.png", "--engine", "vllm", "--model", tiny32,
                                 "--format", "json", "--max-new-tokens", "48")
    assert code == 0, err
    table = json.loads(stdout)
    assert all(len(row) == len(table["columns"]) for row in table["rows"])  # rectangular, as the grammar holds
    schema = tmp_path / "nested.json"
    schema.write_text(json.dumps(NESTED))
    pdf = multipage_pdf(tmp_path / "inv.pdf", [(595, 842), (595, 842)])
    code, stdout, err = cli_vllm("extract", pdf, "--schema", schema, "--engine", "vllm", "--model", tiny32,
                                 "--max-new-tokens", "120")
    record = json.loads(stdout)
    assert record["pages"] == 2 and set(record) >= {"file", "data", "valid", "errors", "flags", "model"}
    assert code == (0 if record["valid"] else 11), err
    if record["valid"]:
        import jsonschema

        jsonschema.validate(record["data"], NESTED)  # every record that claims valid validates
    else:
        assert record["errors"]


def test_directory_rerun_does_nothing_and_the_engine_is_a_new_task(cli_vllm, tiny32, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "chart.png", inbox / "a.png")
    shutil.copy(SAMPLES / "receipt.jpg", inbox / "b.jpg")
    out = tmp_path / "out"
    args = ("ocr", inbox, "-o", out, "--model", tiny32, "--max-new-tokens", "8")
    code, _, err = cli_vllm(*args, "--engine", "vllm")
    assert code == 0, err
    code, _, err = cli_vllm(*args, "--engine", "vllm")
    assert code == 0 and "2 documents already done" in err
    code, _, err = cli_vllm(*args, "--engine", "hf")
    assert code == 0 and "already done" not in err  # another engine: another task


# ------------------------------------------------------------------------------------------ vllm serve


def test_server_engine_against_vllm_serve(cli, vllm_server, tiny32, tmp_path):
    pdf = multipage_pdf(tmp_path / "two.pdf", [(595, 842), (842, 595)])
    code, stdout, err = cli("ocr", pdf, "--engine", "server", "--server", vllm_server, "--api-key", SERVE_KEY,
                            "--model", tiny32, "--format", "jsonl", "--max-new-tokens", "24")
    assert code == 0, err
    served = [json.loads(line) for line in stdout.splitlines()]
    code, stdout, _ = cli("ocr", pdf, "--model", tiny32, "--format", "jsonl", "--max-new-tokens", "24")
    local = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["page"], r["tiles"], r["grid"]) for r in served] == [(r["page"], r["tiles"], r["grid"]) for r in local]
    schema = tmp_path / "nested.json"
    schema.write_text(json.dumps(NESTED))
    code, stdout, err = cli("extract", pdf, "--schema", schema, "--engine", "server", "--server", vllm_server,
                            "--api-key", SERVE_KEY, "--max-new-tokens", "120")
    record = json.loads(stdout)
    assert code == (0 if record["valid"] else 11), err
    if record["valid"]:
        import jsonschema

        jsonschema.validate(record["data"], NESTED)
    code, stdout, err = cli("chart", SAMPLES / "chart.png", "--engine", "server", "--server", vllm_server,
                            "--api-key", SERVE_KEY, "--format", "json", "--max-new-tokens", "48")
    assert code == 0, err
    table = json.loads(stdout)
    assert all(len(row) == len(table["columns"]) for row in table["rows"])


def test_kill_9_then_rerun_finishes_everything_exactly_once(vllm_server, tmp_path):
    inbox = make_inbox(tmp_path / "inbox", 16)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "internvl_cli.cli", "ocr", str(inbox), "-o", str(out), "--engine", "server",
            "--server", vllm_server, "--concurrency", "2", "--max-new-tokens", "64"]
    env = {**os.environ, "INTERNVL_API_KEY": SERVE_KEY}  # the key from the environment, as a cron job passes it
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.md")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the first output, not timing
    proc.kill()
    proc.wait()
    assert len(list(out.glob("*.md"))) < 16, "finished before it could be killed"
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.md")) == [f"doc{i:02d}.png.md" for i in range(16)]
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        assert [s for (s,) in db.execute("SELECT status FROM jobs")] == ["done"] * 16


def test_vllm_serve_with_an_api_key_is_reached_with_it_refused_without_it_and_never_shown(cli, vllm_server,
                                                                                           tmp_path):
    inbox = make_inbox(tmp_path / "inbox", 2)
    code, _, err = cli("ocr", inbox, "-o", tmp_path / "refused", "--engine", "server", "--server", vllm_server,
                       "--max-new-tokens", "8")
    assert code == 12 and "unauthorised" in err, err
    out = tmp_path / "out"
    code, stdout, err = cli("-v", "ocr", inbox, "-o", out, "--engine", "server", "--server", vllm_server,
                            "--api-key", SERVE_KEY, "--max-new-tokens", "8")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.md")) == ["doc00.png.md", "doc01.png.md"]
    assert SERVE_KEY not in stdout + err
    for path in [*out.rglob("*"), *(tmp_path / "refused").rglob("*")]:
        if path.is_file():
            assert SERVE_KEY.encode() not in path.read_bytes(), path
