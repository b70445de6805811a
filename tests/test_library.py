"""The core is a library: usable without Typer or Rich, the CLI being one client of it."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, SAMPLES


def test_core_imports_without_the_cli_packages():
    code = ("import sys; sys.modules['typer'] = None; sys.modules['rich'] = None\n"
            "import internvl_cli.runs.batch, internvl_cli.tasks.ocr, internvl_cli.tasks.chart, internvl_cli.tasks.extract\n"
            "import internvl_cli.engine.hf, internvl_cli.models.convert, internvl_cli.schema.loading\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_run_documents_as_a_library(tiny_model, tmp_path):
    from internvl_cli.runs.batch import BatchSettings, run_documents
    from internvl_cli.engine import Sampling, load_engine
    from internvl_cli.tasks.ocr import OcrTask
    from internvl_cli.tasks.pagewise import PageOptions

    engine = load_engine(str(tiny_model))
    task = OcrTask(PageOptions(tiling=engine.tiling, sampling=Sampling(max_new_tokens=4)), engine.model_id)
    settings = BatchSettings(paths=[str(SAMPLES / "invoice.pdf")], output=tmp_path / "out")
    report = run_documents(task, engine, settings, fmt="jsonl", suffix=".jsonl")
    assert report.done == 1 and report.pages == 2 and report.exit_code() == 0
    lines = (tmp_path / "out" / "invoice.pdf.jsonl").read_text().splitlines()
    assert [json.loads(line)["page"] for line in lines] == [1, 2]
