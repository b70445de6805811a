"""Complete answers on the tiny model: repetitive pages come through whole, loops are cut and flagged, budgets fit
dense pages within the model's context, and no control character reaches the output.

The tiny model's random weights cannot read a page, so answers are forced token by token (tests/forcing.py): the
real engine, stopping criteria, loop detector and tasks run on what a model reading the page right would write.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from forcing import force, forced_engines
from internvl_cli.documents.tiling import tile_image
from internvl_cli.engine import GenerationRequest, Sampling, load_engine
from internvl_cli.decoding.repetition import LoopRule
from repetitive import LEGIT_PAGES, LOOP_PREFIX, LOOP_UNITS, write_pdf

BUDGET = 4096


def _request(engine, marker: str, sampling: Sampling = Sampling(), constraint=None) -> GenerationRequest:
    image = Image.fromarray(np.full((448, 448, 3), 255, dtype=np.uint8))
    _, tiles = tile_image(image, engine.tiling)
    return GenerationRequest(images=[tiles], text=f"Transcribe page {marker}.", sampling=sampling,
                             constraint=constraint)


def _looping(unit: str) -> str:
    return LOOP_PREFIX + unit * BUDGET


@pytest.fixture(scope="module")
def forced(tiny_model):
    """A tiny engine that writes the legitimate pages and the loops, picked by name from the request text."""
    engine = load_engine(str(tiny_model))
    engine.load()
    answers = dict(LEGIT_PAGES)
    answers.update({f"loop of {name}": _looping(unit) for name, unit in LOOP_UNITS.items()})
    return engine, force(engine, answers)


# ---------------------------------------------------------------------------------------------- in the engine


# A rule scaled down 8x, so loops of long units are cut after a few hundred forced tokens: what is tested here is
# the engine's streaming (every token fed as generated, rows cut where the detector says); the default rule's
# bounds for every unit are tested on token streams in test_repetition.py.
SMALL = LoopRule(max_tokens=256, max_chars=500, max_lines=40, max_line_chars=120)


@pytest.mark.parametrize("unit,rule", [("one word", LoopRule()), ("a cell", LoopRule()), ("a table row", SMALL),
                                       ("a label", SMALL)])
def test_a_loop_is_cut_within_the_bound_and_keeps_the_text_before_it(forced, unit, rule):
    engine, calls = forced
    result = engine.generate([_request(engine, f"loop of {unit}", Sampling(loop=rule))])[0]
    assert result.finish_reason == "repetition"
    assert result.text.startswith(LOOP_PREFIX.rstrip()) and LOOP_UNITS[unit].strip() in result.text
    assert len(result.text) <= len(LOOP_PREFIX) + 2 * len(LOOP_UNITS[unit])
    prefix_tokens, unit_tokens = (len(engine.tokenizer(text, add_special_tokens=False).input_ids)
                                  for text in (LOOP_PREFIX, LOOP_UNITS[unit]))
    # stopped early (a looping row holds its GPU batch): within the stated bound of the loop's start
    assert calls[-1].steps <= prefix_tokens + rule.bound(unit_tokens) + 1 < BUDGET


def test_loops_and_pages_share_a_batch_without_touching_each_other(forced):
    engine, calls = forced
    names = ["invoice-12-identical-rows", "loop of one word", "form-25-empty-rows", "loop of a cell"]
    results = engine.generate([_request(engine, name) for name in names])
    assert [r.finish_reason for r in results] == ["stop", "repetition", "stop", "repetition"]
    for name, result in zip(names[::2], results[::2]):
        assert result.text == LEGIT_PAGES[name] and result.flags == []
    assert calls[-1].steps < 500  # the batch ended with its longest page, not at the budget


def test_loop_detection_can_be_turned_off_and_tuned(forced):
    engine, _ = forced
    off = Sampling(max_new_tokens=300, loop=LoopRule.off())
    result = engine.generate([_request(engine, "loop of one word", off)])[0]
    assert result.finish_reason == "length" and result.new_tokens == 300
    strict = Sampling(loop=LoopRule(max_lines=20))
    result = engine.generate([_request(engine, "labels-30-identical", strict)])[0]
    assert result.finish_reason == "repetition"  # a user who knows better can make labels count as a loop


def test_the_budget_is_a_ceiling_and_stays_within_the_context(forced, tiny_model, tmp_path):
    engine, _ = forced
    result = engine.generate([_request(engine, "invoice-12-identical-rows", Sampling(max_new_tokens=50))])[0]
    assert result.finish_reason == "length" and result.new_tokens == 50
    # A checkpoint with a short context: the answer gets what the context leaves after the prompt.
    short = tmp_path / "short-context"
    shutil.copytree(tiny_model, short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 400
    (short / "config.json").write_text(json.dumps(config))
    small = load_engine(str(short))
    small.load()
    force(small, dict(LEGIT_PAGES))
    assert small.context_length == 400 and small.describe()["context"] == 400
    result = small.generate([_request(small, "labels-30-identical")])[0]
    assert result.finish_reason == "length" and result.prompt_tokens + result.new_tokens == 400
    config["text_config"]["max_position_embeddings"] = 100  # less than the prompt itself
    (short / "config.json").write_text(json.dumps(config))
    tiny_context = load_engine(str(short))
    result = tiny_context.generate([_request(tiny_context, "labels-30-identical")])[0]
    assert result.flags == ["context-full"] and result.text == "" and result.finish_reason == "length"


def test_default_budget_fits_dense_pages():
    assert Sampling().max_new_tokens >= 4096


def test_extract_keeps_twelve_identical_line_items(tiny_model, tmp_path, monkeypatch, cli):
    item = {"description": "Widget A, steel, 40 mm", "quantity": 1, "unit_price": 9.99, "amount": 9.99}
    answer = json.dumps({"invoice_number": "2024-117", "line_items": [item] * 12, "total": 119.88},
                        separators=(",", ":"))
    schema = tmp_path / "lines.json"
    schema.write_text(json.dumps({
        "type": "object", "additionalProperties": False, "required": ["invoice_number", "line_items", "total"],
        "properties": {
            "invoice_number": {"type": "string"},
            "line_items": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["description", "quantity", "unit_price", "amount"],
                "properties": {"description": {"type": "string"}, "quantity": {"type": "integer"},
                               "unit_price": {"type": "number"}, "amount": {"type": "number"}}}},
            "total": {"type": "number"}}}))
    pdf = write_pdf(tmp_path / "invoice-2024-117.pdf", LEGIT_PAGES["invoice-12-identical-rows"])
    with forced_engines(monkeypatch, {"Invoice 2024-117": answer}):
        code, out, err = cli("extract", pdf, "--schema", schema, "--model", tiny_model, "--max-tiles", "1")
    record = json.loads(out)
    assert code == 0, err
    assert record["valid"] and record["flags"] == [] and record["data"]["line_items"] == [item] * 12
    assert record["data"]["total"] == 119.88


# ---------------------------------------------------------------------------------------------- through `internvl ocr`


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("repetitive")
    for name, text in LEGIT_PAGES.items():
        write_pdf(folder / f"{name}.pdf", text)
    return folder


def _titles(pages: dict[str, str]) -> dict[str, str]:
    """Marker -> answer: each page is recognised by its title, which its text layer (in the prompt) carries."""
    return {text.splitlines()[0].lstrip("# "): text for text in pages.values()}


def test_repetitive_pdf_pages_come_through_ocr_whole(cli, tiny_model, corpus, monkeypatch):
    with forced_engines(monkeypatch, _titles(LEGIT_PAGES)):
        code, out, err = cli("ocr", corpus, "--model", tiny_model, "--format", "jsonl", "--max-tiles", "1")
    assert code == 0, err
    records = {json.loads(line)["file"].rsplit("/", 1)[-1][:-4]: json.loads(line) for line in out.splitlines()}
    assert sorted(records) == sorted(LEGIT_PAGES)
    for name, record in records.items():
        assert record["source"] == "vision+text-layer", name
        assert record["flags"] == [], name  # not cut, not flagged, not retried
        assert record["text"] == LEGIT_PAGES[name], name


def test_a_looping_pdf_page_is_cut_flagged_and_retried(cli, tiny_model, tmp_path, monkeypatch):
    pdf = write_pdf(tmp_path / "statement.pdf", LOOP_PREFIX + LOOP_UNITS["a cell"] * 3)
    with forced_engines(monkeypatch, {"Statement": _looping(LOOP_UNITS["a cell"])}) as calls:
        code, out, err = cli("ocr", pdf, "--model", tiny_model, "--format", "jsonl", "--max-tiles", "1")
    record = json.loads(out)
    assert code == 0, err
    assert record["flags"] == ["retried", "repetition"]  # both tries looped: the longer (here equal) is kept
    assert record["text"] == LOOP_PREFIX + "| 0 |"
    assert len(calls) == 2 and all(call.steps < 600 for call in calls)  # greedy, then one sampled retry


def test_a_retry_that_does_not_loop_is_kept(cli, tiny_model, tmp_path, monkeypatch):
    from internvl_cli.tasks import pagewise

    pdf = write_pdf(tmp_path / "statement.pdf", LOOP_PREFIX)
    answers = {"Statement": _looping(LOOP_UNITS["a cell"]), "the sampled retry, seed 0": LOOP_PREFIX + "| 0 | 0 |"}
    real_retry = pagewise.PageTask.retry_request

    def retry_request(self, unit, result):  # the sampled retry's prompt carries a marker for the forcing
        request = real_retry(self, unit, result)
        return None if request is None else pagewise.replace(request, text=request.text + " the sampled retry, seed 0")

    monkeypatch.setattr(pagewise.PageTask, "retry_request", retry_request)
    with forced_engines(monkeypatch, answers):
        code, out, err = cli("ocr", pdf, "--model", tiny_model, "--format", "jsonl", "--max-tiles", "1")
    record = json.loads(out)
    assert code == 0, err
    assert record["flags"] == ["retried"] and record["text"] == (LOOP_PREFIX + "| 0 | 0 |").strip()


def test_answers_carry_no_control_characters(cli, tiny_model, tmp_path, monkeypatch):
    pdf = write_pdf(tmp_path / "controls.pdf", "# Controls\n\nplain text, long enough to be a text layer")
    dirty = "# Controls\r\n\n\x1b[31mred\x1b[0m text\x00 with\x07 bell\x0b and\ttab\x9b end"
    with forced_engines(monkeypatch, {"Controls": dirty}):
        code, out, err = cli("ocr", pdf, "--model", tiny_model, "--max-tiles", "1", "--format", "text")
        assert code == 0, err
        assert out == "# Controls\n\nred text with bell and\ttab end\n"
        code, _, err = cli("ocr", pdf, "--model", tiny_model, "--max-tiles", "1", "-o", tmp_path / "out")
    assert code == 0, err
    written = (tmp_path / "out" / "controls.pdf.md").read_text()
    assert "red text with bell and\ttab end" in written
    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7f <= ord(c) <= 0x9f for c in out + written)
