"""The core is a library: usable without Typer or Rich, the CLI being one client of it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


# ---------------------------------------------------------------------- the facade (internvl_cli.load/ocr/...)

def readme_example(section: str) -> str:
    """The first python block of a README section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split("```python\n", 1)[1].split("```", 1)[0]


def test_importing_the_facade_loads_no_engine_library():
    code = ("import sys, internvl_cli; internvl_cli.ocr, internvl_cli.Extraction\n"
            "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_readme_library_example_runs(tiny_model, monkeypatch, capsys):
    """README's "Use it as a library" example, on the tiny model forced to answer as a model reading right."""
    from forcing import forced_engines

    import internvl_cli

    code = readme_example("Use it as a library")
    assert 'internvl_cli.load("internvl3-2b-awq")' in code
    monkeypatch.chdir(REPO)
    answers = {"Transcribe everything": "# Invoice\nTotal 12.50",
               "CSV table": "Year,Sales\n2023,10\n2024,12\n",
               "Fields:": '{"shop": "Corner Shop", "total": 12.5, "date": "2024-05-01"}'}
    scope: dict = {}
    with forced_engines(monkeypatch, answers) as calls:
        exec(code.replace('"internvl3-2b-awq"', repr(str(tiny_model))), scope)
    doc, receipt, figure = scope["doc"], scope["receipt"], scope["figure"]
    assert isinstance(doc, internvl_cli.Document) and not doc.failed and len(doc.pages) == 2
    assert doc.text == "# Invoice\nTotal 12.50\n\n# Invoice\nTotal 12.50"
    assert [page.record["page"] for page in doc.pages] == [1, 2] and doc.pages[0].record["file"].endswith(
        "invoice.pdf")
    assert isinstance(receipt, internvl_cli.Extraction) and receipt.valid and receipt.errors == []
    assert receipt.data == {"shop": "Corner Shop", "total": 12.5, "date": "2024-05-01"}
    assert figure.pages[0].columns == ["Year", "Sales"] and figure.pages[0].rows == [["2023", "10"], ["2024", "12"]]
    # one model for the three calls: loaded once (the forcing patch wraps each generate call of that one engine)
    assert scope["model"].engine.model is not None and len(calls) >= 3
    out = capsys.readouterr().out
    assert "samples/invoice.pdf 2 [" in out and "True {'shop': 'Corner Shop'" in out


def test_facade_reports_failed_documents_and_refuses_unknown_options(tiny_model, tmp_path):
    import internvl_cli
    from internvl_cli.errors import UsageError

    model = internvl_cli.load(str(tiny_model), device="cpu")
    with pytest.raises(UsageError, match="takes no option max_tile"):
        internvl_cli.ocr(SAMPLES / "invoice.pdf", model=model, max_tile=6)
    with pytest.raises(UsageError, match="--pages"):
        internvl_cli.ocr(SAMPLES / "invoice.pdf", model=model, pages="3-1")
    with pytest.raises(UsageError, match=r"ocr\(\): concurrency, device set up an engine.*internvl_cli.load\(\)"):
        internvl_cli.ocr(SAMPLES / "invoice.pdf", model=model, device="cuda", concurrency=4)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 not really")
    [missing] = internvl_cli.ocr(tmp_path / "missing.pdf", model=model)
    assert missing.failed and missing.pages == [] and "missing.pdf" in str(missing.path)
    [unreadable] = internvl_cli.ocr([broken], model=model, max_new_tokens=2)
    assert unreadable.failed and unreadable.error and unreadable.pages == []
    assert model.engine.model is None  # nothing readable: the weights never loaded
    done = internvl_cli.ocr(SAMPLES / "receipt.jpg", model=model, max_new_tokens=2, output=tmp_path / "out")
    assert [d.failed for d in done] == [False] and (tmp_path / "out" / "receipt.jpg.md").exists()
    assert internvl_cli.ocr(SAMPLES / "receipt.jpg", model=model, max_new_tokens=2, output=tmp_path / "out") == []
