"""Tests of the structured output step: schema loading, llguidance-constrained generate(), chart tables, voting."""
from __future__ import annotations

import csv
import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from internvl_cli.errors import ExitCode, SchemaError
from internvl_cli.decoding.constraints import json_grammar as _json_grammar
from internvl_cli.decoding.hf_processor import grammar_logits_processor, ll_tokenizer
from internvl_cli.decoding.hf_processor import json_logits_processor as _json_logits_processor
from internvl_cli.schema.formats import grammar_pattern
from internvl_cli.schema.loading import check_schema, list_schemas, load_schema
from internvl_cli.schema.answers import majority_vote, parse_answer
from internvl_cli.tasks.tables import is_rectangular, normalise_number, normalise_numbers, parse_table, table_grammar


def json_grammar(schema):
    """The grammar the extract task decodes under: built from the schema's grammar copy."""
    return _json_grammar(check_schema(schema).grammar)


def json_logits_processor(tokenizer, schema, *args, **kwargs):
    return _json_logits_processor(tokenizer, check_schema(schema).grammar, *args, **kwargs)


def parse_json_output(text, schema):
    answer = parse_answer(text, check_schema(schema))
    return answer.data, answer.errors


def validate(data, schema):
    return check_schema(schema).check(data)

SHIPPED = ["invoice", "receipt", "key_value"]

# Prompts of different lengths, so the batch is left-padded.
PROMPTS = [
    "Extract the invoice as JSON.",
    "Receipt: coffee 3.50, bagel 2.25, tax 0.46. Thank you for shopping!",
    "Hi",
]

NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 6},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "address"],
    "additionalProperties": False,
}

ARRAY_OF_OBJECTS = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 4},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                    "price": {"type": "number", "minimum": 0},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}

SCALARS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["paid", "open", "void"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": -5, "maximum": 5},
        "total": {"type": "number"},
        "when": {"type": "string", "format": "date"},
        "note": {"type": "string", "maxLength": 5},
        "flag": {"type": ["boolean", "null"]},
    },
    "required": ["status", "score", "count", "total", "when"],
    "additionalProperties": False,
}

MODES = [("greedy", None), ("sample", 0), ("sample", 1)]


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random checkpoint, built once for this module: (tokenizer, model)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    try:  # tests/ is on sys.path under pytest's default import mode; tests.* once it becomes a package
        from tiny_models import build_tiny_native
    except ImportError:
        from tests.tiny_models import build_tiny_native

    path = build_tiny_native(tmp_path_factory.mktemp("tiny"))
    # A 0.2M-parameter model gains nothing from intra-op threads, and on a busy 2-core runner their
    # spin-waiting made generate() 10-50x slower; restored afterwards for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoTokenizer.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path).eval()
    torch.set_num_threads(threads)


class Nudge:
    """Stands in for a model that likes to finish: boosts tokens that close strings, arrays and objects.

    Random weights give near-uniform logits, so unconstrained lengths would run to max_new_tokens.
    The grammar must keep outputs valid whatever the scores are, so biasing them is a fair test.
    """

    def __init__(self, tokenizer, strength: float = 6.0):
        import torch

        self.bias = torch.zeros(len(tokenizer))
        for token in range(len(tokenizer)):
            text = tokenizer.decode([token])
            # '"' ends strings; ',' ']' '}' end numbers and containers but are plain characters inside
            # strings, so they get less, or strings would never close
            if '"' in text or "\n" in text:
                self.bias[token] = strength
            elif any(c in text for c in ",]}"):
                self.bias[token] = strength / 2
        self.bias[tokenizer.eos_token_id] = strength

    def __call__(self, input_ids, scores):
        return scores + self.bias[: scores.shape[-1]]


def generate(tiny, processor, *, mode: str, seed: int | None, max_new_tokens: int, nudge: float = 6.0):
    """Left-padded batch generate with the processor; returns (texts from the matchers, HF decodes)."""
    import torch

    tokenizer, model = tiny
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    assert len(set(lengths)) == len(PROMPTS) and batch.attention_mask[:, -1].all()  # left-padded, ragged
    if seed is not None:
        torch.manual_seed(seed)
    output = model.generate(
        **batch, logits_processor=[Nudge(tokenizer, nudge), processor], max_new_tokens=max_new_tokens,
        do_sample=mode == "sample",
    )
    new_tokens = output[:, batch.input_ids.shape[1]:]
    return processor.finalize(output), tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def schema_of(name: str) -> dict:
    return {"nested": NESTED, "array_of_objects": ARRAY_OF_OBJECTS, "scalars": SCALARS}.get(name) or load_schema(
        name).schema


# --------------------------------------------------------------------------------------------------
# schema loading
# --------------------------------------------------------------------------------------------------


def _subschemas(node):
    if isinstance(node, dict):
        for key in ("properties",):
            for child in node.get(key, {}).values():
                yield child
                yield from _subschemas(child)
        if isinstance(node.get("items"), dict):
            yield node["items"]
            yield from _subschemas(node["items"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_schema_loads_and_is_documented(name):
    loaded = load_schema(name)
    assert loaded.name == name and loaded.path.name == f"{name}.json"
    schema = loaded.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for node in [schema, *_subschemas(schema)]:
        assert node.get("title") and node.get("description"), node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False and node.get("required")


def test_shipped_schema_details():
    invoice, receipt, kv = (load_schema(n).schema for n in SHIPPED)
    assert invoice["properties"]["invoice_date"]["format"] == "date"
    assert receipt["properties"]["date"]["format"] == "date"
    assert invoice["properties"]["total"]["type"] == "number"
    assert kv["properties"]["fields"]["type"] == "array"
    assert set(kv["properties"]["fields"]["items"]["required"]) == {"key", "value"}


def test_list_schemas():
    listed = dict(list_schemas())
    assert set(SHIPPED) <= set(listed)
    assert listed["invoice"].startswith("Invoice: ")


def test_load_schema_by_path_and_with_json_suffix(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(NESTED))
    assert load_schema(str(path)).schema == NESTED
    assert load_schema("invoice.json").name == "invoice"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "object",\n  "properties": {,}}',
         "not valid JSON: Expecting property name enclosed in double quotes at line 2, column 18"),
        ('{"type": 12}', "not a valid JSON Schema"),
        ('{"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}',
         "does not point inside the document"),
        ('{"$ref": "other.json#/x"}', "remote references are never fetched"),
        ('{"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}', "drafts 3 and 4"),
        ('{"$schema": "https://example.com/my-meta", "type": "integer"}', "a meta-schema is never fetched"),
        ('{"not": {}}', "accepts no value"),
        ('{"type": "integer", "minimum": 3, "maximum": 2}', "accepts no value"),
        ('{"type": "integer", "maximum": NaN}', "NaN is not JSON"),
        ('[1, 2]', "must be a JSON object"),
    ],
)
def test_bad_schema_files(tmp_path, monkeypatch, text, expected):
    def no_network(*args, **kwargs):
        raise AssertionError("schema loading must never touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SchemaError) as caught:
        load_schema(str(path))
    error = caught.value
    assert expected in error.message and error.path == str(path)
    assert error.exit_code == ExitCode.SCHEMA and "\n" not in error.one_line()


def test_missing_schema_names_the_shipped_ones():
    with pytest.raises(SchemaError, match="shipped: invoice, key_value, receipt"):
        load_schema("no_such_schema")


def test_schema_errors_come_before_any_model_or_torch_import(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"type": 12}')
    code = (
        "import sys\n"
        "from internvl_cli.schema.loading import load_schema\n"
        "from internvl_cli.errors import SchemaError\n"
        f"try:\n    load_schema({str(path)!r})\nexcept SchemaError as e:\n    print(e.one_line())\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not a valid JSON Schema" in done.stdout


# --------------------------------------------------------------------------------------------------
# constrained generation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,seed", MODES)
@pytest.mark.parametrize("name", ["nested", "array_of_objects", "scalars", *SHIPPED])
def test_constrained_json_is_always_valid(tiny, name, mode, seed):
    schema = schema_of(name)
    processor = json_logits_processor(tiny[0], schema, batch_size=len(PROMPTS))
    # the nudge ends strings within a few tokens; shipped schemas have more fields, so more room
    budget = 600 if name in SHIPPED else 200
    texts, decoded = generate(tiny, processor, mode=mode, seed=seed, max_new_tokens=budget)
    assert texts == decoded  # the matcher saw exactly what the model produced
    assert processor.complete == [True] * len(PROMPTS), (processor.errors, texts)
    for text in texts:
        data, errors = parse_json_output(text, schema)
        assert errors == [] and json.loads(text) == data
        outside_strings = re.sub(r'"(?:[^"\\\\]|\\\\.)*"', '""', text)
        assert not re.search(r"\\s", outside_strings), text  # compact JSON: no free whitespace


def test_optional_fields_and_items_do_appear_when_sampling(tiny):
    """Sampling with a weak nudge explores the grammar: optional fields and several items occur."""
    outputs = []
    for seed in range(3):
        processor = json_logits_processor(tiny[0], ARRAY_OF_OBJECTS)
        texts, _ = generate(tiny, processor, mode="sample", seed=seed, max_new_tokens=160, nudge=1.0)
        outputs += [json.loads(t) for t, ok in zip(texts, processor.complete) if ok]
    assert outputs
    assert any(len(o["items"]) > 1 for o in outputs) and any("price" in i for o in outputs for i in o["items"])


def test_cut_off_decode_is_reported_invalid(tiny):
    schema = load_schema("invoice").schema
    processor = json_logits_processor(tiny[0], schema, batch_size=len(PROMPTS))
    texts, _ = generate(tiny, processor, mode="greedy", seed=None, max_new_tokens=8)
    assert processor.complete == [False] * len(PROMPTS)
    for text in texts:
        data, errors = parse_json_output(text, schema)
        assert data is None and len(errors) == 1 and "cut off" in errors[0]


def test_complete_grammar_forces_eos(tiny):
    import torch

    tokenizer = tiny[0]
    processor = json_logits_processor(tokenizer, {"type": "integer", "minimum": 0, "maximum": 9}, batch_size=1)
    prompt = torch.tensor([tokenizer.encode("n=", add_special_tokens=False)])
    scores = processor(prompt, torch.zeros(1, len(tokenizer)))
    assert torch.isfinite(scores[0, tokenizer.convert_tokens_to_ids("7")])
    assert not torch.isfinite(scores[0, tokenizer.eos_token_id])  # nothing generated yet
    seven = torch.tensor([[tokenizer.convert_tokens_to_ids("7")]])
    scores = processor(torch.cat([prompt, seven], dim=1), torch.zeros(1, len(tokenizer)))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [tokenizer.eos_token_id]
    assert processor.complete == [True] and processor.texts() == ["7"]


def test_a_rejected_token_ends_the_row_as_invalid(tiny):
    """A token the grammar did not allow (e.g. forced by another processor) is recorded, then only EOS."""
    import torch

    tokenizer = tiny[0]
    processor = json_logits_processor(tokenizer, NESTED, batch_size=2)
    prompt = torch.tensor([tokenizer.encode("x", add_special_tokens=False)] * 2)
    processor(prompt, torch.zeros(2, len(tokenizer)))
    step = torch.tensor([[tokenizer.convert_tokens_to_ids("x")], [tokenizer.convert_tokens_to_ids("{")]])
    scores = processor(torch.cat([prompt, step], dim=1), torch.zeros(2, len(tokenizer)))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [tokenizer.eos_token_id]
    assert torch.isfinite(scores[1]).any() and not torch.isfinite(scores[1, tokenizer.eos_token_id])
    assert processor.errors[0] and "\n" not in processor.errors[0] and processor.errors[1] is None
    assert processor.complete == [False, False] and processor.texts() == ["", "{"]


def test_every_eos_id_may_end_a_complete_row(tiny):
    """generation_config.eos_token_id is often a list (e.g. <|im_end|> and <|endoftext|>)."""
    import torch

    tokenizer = tiny[0]
    ends = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    processor = json_logits_processor(tokenizer, {"enum": ["a"]}, batch_size=1, eos_token_id=ends)
    prompt = torch.tensor([tokenizer.encode("x", add_special_tokens=False)])
    processor(prompt, torch.zeros(1, len(tokenizer)))
    text = torch.tensor([tokenizer.encode('"a"', add_special_tokens=False)])
    for column in range(text.shape[1]):
        scores = processor(torch.cat([prompt, text[:, : column + 1]], dim=1), torch.zeros(1, len(tokenizer)))
    assert sorted(torch.isfinite(scores[0]).nonzero().flatten().tolist()) == sorted(ends)


def test_padded_model_vocabulary_is_masked(tiny):
    """Real checkpoints pad the embedding past the tokenizer; those ids must never be allowed."""
    import torch

    tokenizer = tiny[0]
    processor = json_logits_processor(tokenizer, NESTED, batch_size=2)
    prompt = torch.tensor([tokenizer.encode("x", add_special_tokens=False)] * 2)
    scores = processor(prompt, torch.zeros(2, len(tokenizer) + 40))
    assert not torch.isfinite(scores[:, len(tokenizer):]).any()
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed and all(tokenizer.decode([t]).startswith("{") for t in allowed)  # an object must start


def test_strict_dates_and_bounded_numbers_in_the_grammar(tiny):
    from llguidance import LLMatcher

    tokenizer = tiny[0]
    lltok = ll_tokenizer(tokenizer, [tokenizer.eos_token_id])

    def accepts(schema, text):
        matcher = LLMatcher(lltok, json_grammar(schema), log_level=0)
        return matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()

    date = {"type": "string", "format": "date"}
    assert accepts(date, '"2024-02-29"') and accepts(date, '"2000-02-29"') and accepts(date, '"2023-12-31"')
    assert not accepts(date, '"2023-02-29"') and not accepts(date, '"1900-02-29"') and not accepts(date, '"0000-01-01"')
    assert not accepts(date, '"2023-04-31"')
    assert accepts({"type": "number"}, "1234.5") and not accepts({"type": "number"}, "1e400")
    assert parse_json_output("1e400", {"type": "number"})[1] == ["$: number 1e400 is out of range"]
    assert re.fullmatch(grammar_pattern("date"), "2024-02-29")


def test_chart_table_grammar_is_always_rectangular(tiny):
    grammar = table_grammar(max_columns=4, max_rows=3, max_cell_chars=6)
    for mode, seed in MODES:
        processor = grammar_logits_processor(tiny[0], grammar, batch_size=len(PROMPTS))
        # worst case: 4 lines of 4 quoted 6-char cells, commas and a newline = 140 single-byte tokens
        texts, decoded = generate(tiny, processor, mode=mode, seed=seed, max_new_tokens=200, nudge=1.0)
        assert texts == decoded and processor.complete == [True] * len(PROMPTS)
        for text in texts:
            rows = list(csv.reader(io.StringIO(text)))
            assert 2 <= len(rows) <= 4 and len({len(r) for r in rows}) == 1 and len(rows[0]) <= 4, text
            assert is_rectangular(parse_table(text))


def test_default_table_grammar_rejects_ragged_rows(tiny):
    from llguidance import LLMatcher

    tokenizer = tiny[0]
    lltok = ll_tokenizer(tokenizer, [tokenizer.eos_token_id])
    grammar = LLMatcher.grammar_from_lark(table_grammar())

    def accepts(text):
        matcher = LLMatcher(lltok, grammar, log_level=0)
        return matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()

    assert accepts('Year,Revenue\n2021,"1,234.5"\n2022,\n')
    assert accepts(",".join("abcdefghijklmnop") + "\n" + "," * 15)
    assert not accepts("Year,Revenue\n2021,10,3")
    assert not accepts("Year,Revenue\n2021")  # a short last row is not a table (yet)
    assert not accepts(",".join("abcdefghijklmnopq") + "\n" + "," * 16)  # 17 columns
    assert not accepts("a\n\nb")  # no empty one-column rows
    assert not accepts("a,b\n1\x012,3")  # no control characters in cells
    assert accepts("x,y\n" + "1,2\n" * 200) and not accepts("x,y\n" + "1,2\n" * 201)  # max_rows data rows


# --------------------------------------------------------------------------------------------------
# tables, validation, voting
# --------------------------------------------------------------------------------------------------


def test_parse_table():
    assert parse_table('Year, Revenue\n2021,"1,234.5"\n\n2022, 3\n') == [
        ["Year", "Revenue"], ["2021", "1,234.5"], ["2022", "3"],
    ]
    assert not is_rectangular([["a", "b"], ["1"]]) and not is_rectangular([])


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1,234.5", "1234.5"), ("12 %", "12"), ("€ 3.50", "3.50"), ("3.50€", "3.50"), ("EUR 1 234", "1234"),
        ("-$5", "-5"), ("−7", "-7"), ("+3", "3"), ("12,345,678", "12345678"), ("2021", "2021"),
        ("3,50", "3,50"), ("1,23", "1,23"), ("1,234 567", "1,234 567"), ("(12)", "(12)"), ("Q1", "Q1"),
        ("", ""), ("-", "-"), ("n/a", "n/a"),
    ],
)
def test_normalise_number(cell, expected):
    assert normalise_number(cell) == expected


def test_normalise_numbers_leaves_the_header():
    rows = [["Year", "1,000"], ["2021", "1,234.5"], ["2022", "12 %"]]
    assert normalise_numbers(rows) == [["Year", "1,000"], ["2021", "1234.5"], ["2022", "12"]]
    assert normalise_numbers(rows, header=False)[0] == ["Year", "1000"]


def test_validate_reports_json_paths_and_formats():
    errors = validate({"items": [{"sku": "toolong", "qty": 0}]}, ARRAY_OF_OBJECTS)
    assert errors == [
        "$.items[0].qty: 0 is less than the minimum of 1",
        "$.items[0].sku: 'toolong' is too long",
    ]
    date_errors = validate({"d": "2023-02-29"}, {"properties": {"d": {"type": "string", "format": "date"}}})
    assert len(date_errors) == 1 and date_errors[0].startswith("$.d: '2023-02-29' is not a 'date'")
    assert validate({"d": "2024-02-29"}, {"properties": {"d": {"format": "date"}}}) == []


def test_majority_vote_field_wise():
    records = [
        {"total": 10.0, "vendor": "ACME", "date": "2024-01-01"},
        {"total": 10, "vendor": "ACME GmbH", "date": "2024-01-02"},
        {"total": 12.5, "vendor": "ACME GmbH", "date": "2024-01-01"},
    ]
    assert majority_vote(records) == {"total": 10.0, "vendor": "ACME GmbH", "date": "2024-01-01"}


def test_majority_vote_recurses_into_objects_and_keeps_arrays_whole():
    records = [
        {"seller": {"name": "A", "vat": "1"}, "items": [1, 2]},
        {"seller": {"name": "B", "vat": "1"}, "items": [1, 2, 3]},
        {"seller": {"name": "A", "vat": "2"}, "items": [1, 2]},
    ]
    assert majority_vote(records) == {"seller": {"name": "A", "vat": "1"}, "items": [1, 2]}


def test_majority_vote_absence_and_ties():
    assert majority_vote([{"a": 1}, {"a": 2}]) == {"a": 1}  # tie: first occurrence
    assert majority_vote([{"a": 1, "b": 1}, {"a": 1}, {"a": 1}]) == {"a": 1}  # absent in the majority
    assert majority_vote([{"a": 1}, {"a": 1, "b": 2}]) == {"a": 1}  # presence tie: first record had no b
    assert majority_vote([{"a": 1, "b": 2}, {"a": 1}]) == {"a": 1, "b": 2}
    assert majority_vote([{"x": {"k": 1}}, {"x": {"k": 1}}, {"x": "text"}]) == {"x": {"k": 1}}
    assert majority_vote([{"o": {"b": 1, "a": 2}}, {"o": {"a": 2, "b": 1}}, {"o": 3}]) == {"o": {"b": 1, "a": 2}}
    assert majority_vote([{"v": [1]}, {"v": "s"}, {"v": "s"}]) == {"v": "s"}
    assert majority_vote([{"k": 1}]) == {"k": 1}
    with pytest.raises(ValueError):
        majority_vote([])
