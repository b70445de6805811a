"""`--engine auto`, the default: its rule as a pure function, the run settling into the engine it picks before
anything loads, `doctor --pages N` saying which engine that is, and the ledger naming the engine that ran."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from internvl_cli.engine.auto import (
    HF_PAGES_PER_S, VLLM_EXTRA_START_S, VLLM_PAGES_PER_S, VLLM_WORTH_PAGES, AutoEngine, break_even_pages,
    choose_engine,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("pages, vllm, cuda, engine, reason", [
    (5000, True, True, "vllm", "5000 pages on a CUDA GPU repay vLLM's start"),
    (None, True, True, "vllm", "an unknown number of pages"),  # not known: taken as many
    (VLLM_WORTH_PAGES, True, True, "vllm", "from 300 pages"),
    (VLLM_WORTH_PAGES - 1, True, True, "hf", "299 pages do not repay vLLM's start"),
    (0, True, True, "hf", "0 pages do not repay"),
    (5000, False, True, "hf", "vLLM is not installed"),
    (5000, True, "no CUDA GPU", "hf", "no CUDA GPU"),
    (5000, True, False, "hf", "no CUDA GPU"),
    (5000, True, "--device cpu", "hf", "--device cpu"),
    (None, False, "no CUDA GPU", "hf", "no CUDA GPU"),  # this CPU machine: CI keeps running hf
])
def test_the_rule(pages, vllm, cuda, engine, reason):
    chosen, why = choose_engine(pages, vllm, cuda)
    assert chosen == engine and reason in why
    assert chosen != "server"


def test_the_threshold_repays_vllms_start_even_on_the_pessimistic_estimates():
    """80 s more start-up against 1/2.5 - 1/10 s saved per page: 267 pages; the threshold rounds that up."""
    assert break_even_pages() == pytest.approx(VLLM_EXTRA_START_S / (1 / HF_PAGES_PER_S - 1 / VLLM_PAGES_PER_S))
    assert round(break_even_pages()) == 267 and break_even_pages() <= VLLM_WORTH_PAGES
    assert round(break_even_pages(60 - 10, 0.5, 25)) == 26  # the optimistic end


def test_settling_counts_pages_only_where_they_can_change_the_choice(tiny_model):
    from internvl_cli.models.info import checkpoint_info

    info, counted, built = checkpoint_info(str(tiny_model)), [], []

    def count(pages):
        return lambda: counted.append(pages) or pages

    def settle(offers, pages):
        AutoEngine(info, lambda kind: built.append(kind) or kind, offers=lambda device: offers).settle(count(pages))

    settle((True, "no CUDA GPU"), 5000)
    settle((False, True), 5000)
    assert counted == [] and built == ["hf", "hf"]
    settle((True, True), 5000)
    settle((True, True), 20)
    assert counted == [5000, 20] and built[2:] == ["vllm", "hf"]


def test_pages_are_counted_as_the_run_opens_them(tmp_path):
    from internvl_cli.documents.pages import count_pages

    pdf = REPO / "samples" / "invoice.pdf"
    import pymupdf

    with pymupdf.open(pdf) as doc:
        in_pdf = doc.page_count
    assert count_pages(pdf) == in_pdf
    assert count_pages(pdf, pages="1") == 1
    assert count_pages(REPO / "samples" / "receipt.jpg") == 1
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")
    assert count_pages(tmp_path / "broken.pdf") is None  # unknown: its check reports it


def test_doctor_says_which_engine_a_run_of_n_pages_takes_here(cli):
    code, out, err = cli("doctor", "--pages", "5000", "--json")
    assert code == 0, err
    assert json.loads(out)["engine_auto"] == "hf for a run of 5000 pages: no CUDA GPU"


def test_a_default_run_runs_hf_and_the_ledger_names_hf(cli, tiny_model, tmp_path, monkeypatch):
    """No --engine: on this CPU machine auto settles into hf, so the ledger's task is hf's own (a rerun with
    `--engine hf` finds the document done) and the model that loaded is the transformers one."""
    monkeypatch.delenv("INTERNVL_ENGINE", raising=False)
    out = tmp_path / "out"
    code, _, err = cli("ocr", str(REPO / "samples" / "receipt.jpg"), "--model", tiny_model, "--max-new-tokens", "4",
                       "-o", str(out))
    assert code == 0, err
    assert "backend=transformers" in err
    code, _, err = cli("ocr", str(REPO / "samples" / "receipt.jpg"), "--model", tiny_model, "--max-new-tokens", "4",
                       "-o", str(out), "--engine", "hf")
    assert code == 0, err
    assert "1 document already done (use --force" in err
