"""The extract task's records: one per document, valid only when its data validates; votes, retries, windows,
budgets and prompt size decided before the model loads; a stop request ends a batch mid-way."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import SAMPLES, ListSink
from internvl_cli.documents.tiling import TilingConfig
from internvl_cli.engine.base import GenerationRequest, GenerationResult, Sampling
from internvl_cli.errors import ExitCode, UsageError
from internvl_cli.tasks.base import Outcome, Unit, UnitContext
from internvl_cli.tasks.extract import (
    MAX_FIELDS_CHARS,
    ExtractOptions,
    ExtractTask,
    answer_budget,
    describe_fields,
)
from internvl_cli.schema.loading import check_schema

FILE = Path("doc.pdf")


def task(schema, votes: int = 1, **options) -> ExtractTask:
    opts = ExtractOptions(tiling=TilingConfig(), sampling=Sampling(max_new_tokens=64), votes=votes, **options)
    return ExtractTask(opts, check_schema(schema), "tiny")


def outcome(text: str, key: int = 0, pages=(1,), finish: str = "stop", earlier=()) -> Outcome:
    unit = Unit(key=key, request=None, pages=list(pages), context=UnitContext(window=pages[0], source="vision"))
    if earlier:
        unit.earlier = [result(t) for t in earlier]
    return Outcome(unit, result(text, finish), None)


def result(text: str, finish: str = "stop") -> GenerationResult:
    return GenerationResult(text=text, finish_reason=finish, prompt_tokens=10, new_tokens=5, image_tokens=256,
                            seconds=0.5)


OBJECT = {"type": "object", "properties": {"total": {"type": "number"}, "items": {"type": "array", "maxItems": 3}},
          "required": ["total"], "additionalProperties": False}


def test_a_cut_off_answer_is_a_record_with_errors_never_valid_data():
    done = task(OBJECT).finish(FILE, [outcome('{"total":1', finish="length")], 1)
    record = done.records[0]
    assert record["valid"] is False and record["data"] is None and "cut off" in record["errors"][0]
    assert record["flags"] == ["truncated"] and done.keep_output and done.failed
    assert done.error.exit_code == ExitCode.INVALID_OUTPUT


def test_a_null_answer_is_a_valid_record():
    done = task({"type": "null"}).finish(FILE, [outcome("null")], 1)
    assert done.records[0]["data"] is None and done.records[0]["valid"] and not done.failed and done.keep_output


def test_votes_choose_among_valid_answers_only():
    t = task({"type": "object", "required": ["totals"], "properties": {"totals": {
        "type": "object", "additionalProperties": {"type": "number"}, "minProperties": 1}}}, votes=3)
    answers = ['{"totals":{"a":1}}', '{"totals":{"b":1}}', '{"totals":{"c":1}}']
    record = t.finish(FILE, [outcome(text, key) for key, text in enumerate(answers)], 1).records[0]
    assert record["valid"] and record["data"] == {"totals": {"a": 1}}  # never the invalid {"totals": {}}
    mixed = ['{"total":"x"}', '{"total":2.5}', '{"total":2.5,"items":[1]}']
    record = task(OBJECT, votes=3).finish(FILE, [outcome(text, key) for key, text in enumerate(mixed)], 1).records[0]
    assert record["valid"] and record["data"] == {"total": 2.5}  # one bad vote does not spoil the record


def test_an_invalid_answer_is_retried_sampled_and_a_valid_retry_wins():
    t = task({"type": "array", "uniqueItems": True})
    assert t.schema.unenforced == ["uniqueItems"] and t.max_retries == 2
    request = GenerationRequest(images=[], text="x", sampling=Sampling(max_new_tokens=64))
    unit = Unit(key=3, request=request, pages=[1])
    again = t.retry_request(unit, result("[1,1]"))
    assert again is not None and again.sampling.do_sample and again.sampling.seed != request.sampling.seed
    assert t.retry_request(unit, result("[1,2]")) is None  # valid: no retry
    assert t.retry_request(unit, result("[1,", "length")) is None  # cut by the budget: a retry is cut too
    record = t.finish(FILE, [outcome("[1,2]", earlier=["[1,1]", "[2,2]"])], 1).records[0]
    assert record["valid"] and record["data"] == [1, 2] and "retried" in record["flags"]
    assert record["unenforced"] == ["uniqueItems"]


def test_windows_merge_while_the_record_stays_valid():
    t = task(OBJECT, window_pages=1)
    windows = [outcome('{"total":5,"items":[1,2]}', 0, (1,)), outcome('{"total":6,"items":[3]}', 1, (2,)),
               outcome('{"total":7,"items":[4]}', 2, (3,))]
    record = t.finish(FILE, windows, 3).records[0]
    assert record["valid"] and record["data"] == {"total": 5, "items": [1, 2, 3]}  # maxItems 3 holds
    assert "windows-dropped" in record["flags"] and record["pages"] == 3
    record = t.finish(FILE, [outcome('{"total":"x"}', 0, (1,)), outcome('{"total":6}', 1, (2,))], 2).records[0]
    assert record["valid"] and record["data"] == {"total": 6} and "windows-dropped" in record["flags"]
    record = t.finish(FILE, [outcome('{"total":"x"}', 0, (1,)), outcome("{", 1, (2,))], 2).records[0]
    assert not record["valid"] and record["errors"][0].startswith("pages 1: ")
    assert any(e.startswith("pages 2: ") for e in record["errors"])


def test_the_prompt_lists_fields_through_references_and_is_bounded():
    schema = {"$defs": {"Party": {"type": "object", "properties": {"name": {"type": "string",
                                                                             "description": "Legal name."}}}},
              "type": "object", "properties": {"seller": {"$ref": "#/$defs/Party"},
                                               "lines": {"type": "array", "items": {"$ref": "#/$defs/Party"}},
                                               "flag": True, "never": False}}
    text, listed, total = describe_fields(check_schema(schema))
    assert text.splitlines() == ["- seller (object)", "- seller.name (string): Legal name.", "- lines (array)",
                                 "- lines[].name (string): Legal name.", "- flag (value)", "- never (never present)"]
    assert listed == total == 6
    huge = {"type": "object", "properties": {f"field_{i:04d}": {"type": "string", "description": "word " * 400}
                                             for i in range(2000)}}
    t = task(huge)
    assert len(t.fields) <= MAX_FIELDS_CHARS + 100 and t.fields.endswith("(not listed here; the schema still applies)")
    assert t.fields_total == 2000 and 100 < t.fields_listed < 2000  # names kept, descriptions dropped first
    assert "word" not in t.fields
    assert any("lists" in note and "of 2000 fields" in note for note in t.preflight(32768))


def test_a_prompt_that_cannot_fit_the_context_is_refused_before_loading():
    t = task(OBJECT, window_tiles=24)
    assert t.max_image_tokens() >= 24 * 256
    with pytest.raises(UsageError, match="cannot fit the model's context of 4096 tokens") as caught:
        t.preflight(4096)
    assert caught.value.exit_code == ExitCode.BAD_ARGS and "--window-tiles" in caught.value.one_line()
    assert t.preflight(32768) == [] and t.preflight(None) == []


def test_a_window_left_to_its_default_is_sized_to_the_context():
    # an 8,192-token model cannot hold 6 pages of 24 tiles (over 6,000 image tokens plus the prompt) and used to
    # fail every document; the window shrinks, tiles first, and one note says so
    t = task(OBJECT)
    note = t.fit_window(8192)
    assert note and "8192 tokens" in note and "--window-tiles" in note
    assert (t.options.window_pages, t.options.window_tiles) != (6, 24)
    assert t.options.window_pages == 6 and t.options.window_tiles < 24  # pages keep reading together
    assert t.preflight(8192) == []  # now it fits
    assert t.fit_window(8192) is None  # fitted once: nothing more to say
    roomy = task(OBJECT)
    assert roomy.fit_window(32768) is None and roomy.fit_window(None) is None
    assert (roomy.options.window_pages, roomy.options.window_tiles) == (6, 24)
    cramped = task(OBJECT)
    assert cramped.fit_window(400) is None  # not one tile fits: preflight refuses, as before
    with pytest.raises(UsageError, match="cannot fit"):
        cramped.preflight(400)


def _two_hundred_fields():
    props = {f"p{i:03d}": {"type": "integer", "minimum": 0, "maximum": 9} for i in range(200)}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _eight_deep():
    node = {"type": "object", "properties": {"leaf": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["leaf"], "additionalProperties": False}
    for depth in range(8):
        node = {"type": "object", "required": [f"level{depth}"], "additionalProperties": False,
                "properties": {f"level{depth}": node}}
    return node


def test_the_answer_budget_is_sized_from_the_schema():
    wide = check_schema(_two_hundred_fields())
    assert wide.shortest > 1500
    assert answer_budget(wide, 1024, explicit=False)[0] >= 4 * wide.shortest  # grown to let the answer finish
    assert answer_budget(wide, 8192, explicit=False) == (8192, [])
    budget, notes = answer_budget(wide, 1024, explicit=True)
    assert budget == 1024 and "is tight for schema" in notes[0]
    with pytest.raises(UsageError, match="too small for schema"):
        answer_budget(wide, 100, explicit=True)


def run_extract(engine, schema, paths, *, budget=None, votes=1, batch_size=8, stop=None):
    """What `internvl extract` runs once the schema is loaded: the budget from the schema, task, runner."""
    from internvl_cli.runs.runner import RunOptions, Runner

    loaded = check_schema(schema)
    tokens, _ = answer_budget(loaded, budget or 1024, explicit=budget is not None)
    options = ExtractOptions(tiling=engine.tiling.with_limits(1, 1), sampling=Sampling(max_new_tokens=tokens),
                             window_tiles=1, votes=votes)
    sink = ListSink()
    report = Runner(ExtractTask(options, loaded, engine.model_id), engine, sink, "record",
                    RunOptions(batch_size=batch_size), stop=stop).run(paths)
    return sink, report


def test_wide_and_deep_schemas_finish_with_the_tiny_model(engine):
    for schema in (_two_hundred_fields(), _eight_deep()):
        sink, report = run_extract(engine, schema, [SAMPLES / "chart.png"])
        record = sink.records[0]
        assert report.done == 1 and record["valid"], record["errors"][:2]
        assert check_schema(schema).check(record["data"]) == []


def test_the_grammar_is_compiled_once_per_run(engine, tmp_path, monkeypatch):
    from internvl_cli.decoding import hf_processor as hf_constraints

    compiled = []
    real = hf_constraints.LLMatcher

    def counting(*args, **kwargs):
        compiled.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_constraints, "LLMatcher", counting)
    hf_constraints._COMPILED.clear()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"d{i}.png")
        paths[-1].write_bytes((SAMPLES / "chart.png").read_bytes() + bytes([i]))
    sink, report = run_extract(engine, {"type": "object", "properties": {"shop": {"type": "string"}}}, paths,
                               budget=40, votes=2, batch_size=2)
    assert len(sink.records) == 3 and len(compiled) == 1  # 3 documents x 2 votes, in 3 batches


def test_a_stop_request_ends_generation_mid_batch_and_records_nothing(engine, monkeypatch):
    """The stop event (set by SIGTERM/Ctrl-C handlers) ends generate() within a token; the batch's
    documents stay pending instead of being written from cut answers."""
    from internvl_cli.decoding import hf_processor as hf_constraints

    stop = threading.Event()
    steps = []
    real_call = hf_constraints.GrammarLogitsProcessor.__call__

    def call(self, input_ids, scores):
        steps.append(1)
        if len(steps) == 10:
            stop.set()  # as the SIGTERM handler does, here at a known step
        return real_call(self, input_ids, scores)

    monkeypatch.setattr(hf_constraints.GrammarLogitsProcessor, "__call__", call)
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    sink, report = run_extract(engine, schema, [SAMPLES / "chart.png", SAMPLES / "receipt.jpg"], budget=2000,
                               stop=stop)
    assert report.interrupted == ExitCode.INTERRUPTED and report.done == 0
    assert sink.records == [] and sink.failures == []
    assert len(steps) <= 12  # not the 2000 tokens the budget allowed
