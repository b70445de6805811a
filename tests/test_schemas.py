"""Schemas people write: where they come from, drafts and references, the grammar's copy, validation, votes."""
from __future__ import annotations

import json
import random
import re

import pytest

from internvl_cli.errors import ExitCode, SchemaError
from internvl_cli.schema import formats
from internvl_cli.schema.lowering import NUMBER_LIMIT, unsupported_regex
from internvl_cli.schema.answers import Answer, choose_answer, majority_vote, parse_answer
from internvl_cli.schema.loading import check_schema, load_schema, parse_concise, read_schema_spec
from schema_suite import format_cases, reference_errors


def grammar_accepts(schema, text: str) -> bool:
    """Whether the compiled grammar of `schema` (its grammar's copy) accepts `text`, byte by byte."""
    import llguidance
    from llguidance import LLMatcher

    from internvl_cli.decoding.constraints import json_grammar

    matcher = LLMatcher(llguidance.LLTokenizer("byte"), json_grammar(check_schema(schema).grammar), log_level=0)
    tokenizer = llguidance.LLTokenizer("byte")
    return all(matcher.consume_token(t) for t in tokenizer.tokenize_bytes(text.encode())) and matcher.is_accepting()


def valid(schema, data) -> bool:
    return parse_answer(json.dumps(data), check_schema(schema)).valid


# --------------------------------------------------------------------------------------------------
# where schemas come from
# --------------------------------------------------------------------------------------------------


def test_concise_field_lists():
    schema = parse_concise("vendor, total float: grand total, due date?, tags str[], n int, ok bool")
    assert schema["required"] == ["vendor", "total", "tags", "n", "ok"] and schema["additionalProperties"] is False
    assert schema["properties"] == {
        "vendor": {"type": "string"}, "total": {"type": "number", "description": "grand total"},
        "due": {"type": "string", "format": "date"}, "tags": {"type": "array", "items": {"type": "string"}},
        "n": {"type": "integer"}, "ok": {"type": "boolean"},
    }
    lines = parse_concise("vendor: the seller, as printed\ntotal float: incl. tax, in EUR\n")
    assert lines["properties"]["vendor"]["description"] == "the seller, as printed"
    assert lines["properties"]["total"] == {"type": "number", "description": "incl. tax, in EUR"}
    loaded = load_schema("shop, total float, date date")
    assert loaded.name == "concise" and loaded.unenforced == []
    assert parse_answer('{"shop":"A","total":3.5,"date":"2024-02-29"}', loaded).valid
    assert not parse_answer('{"shop":"A","total":3.5,"date":"2023-02-29"}', loaded).valid


@pytest.mark.parametrize(("spec", "message"), [
    ("total money", "unknown type 'money'"),
    ("a, a int", "listed twice"),
    ("vendor", "no such schema file or shipped schema"),
    ("missing.json", "no such schema file or shipped schema"),
    ('{"type": ', "not valid JSON"),
])
def test_bad_schema_specs(spec, message):
    with pytest.raises(SchemaError, match=re.escape(message)) as caught:
        load_schema(spec)
    assert caught.value.exit_code == ExitCode.SCHEMA and "\n" not in caught.value.one_line()


def test_inline_json_and_files_and_shipped_names(tmp_path):
    assert read_schema_spec('{"type": "integer"}')[:2] == ("inline", None)
    assert load_schema("true").grammar["$ref"] == "#/$defs/any"
    path = tmp_path / "mine.json"
    path.write_text('{"type": "string"}')
    assert load_schema(str(path)).name == "mine" and load_schema("invoice.json").name == "invoice"


# --------------------------------------------------------------------------------------------------
# drafts and references
# --------------------------------------------------------------------------------------------------


def test_draft7_schemas_are_read_as_draft7():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"n": {"type": "integer", "maximum": 9}},
        "type": "object",
        "properties": {"pair": {"type": "array", "items": [{"$ref": "#/definitions/n"}, {"type": "string"}],
                                "additionalItems": False},
                       "a": {"type": "string"}, "b": {"type": "string"}},
        "dependencies": {"a": ["b"]},
        "required": ["pair"],
    }
    loaded = check_schema(schema)
    assert loaded.draft == "draft7" and loaded.unenforced == ["dependencies"]
    assert grammar_accepts(schema, '{"pair":[3,"x"]}') and not grammar_accepts(schema, '{"pair":[3,"x",1]}')
    assert not grammar_accepts(schema, '{"pair":[10,"x"]}')
    assert valid(schema, {"pair": [3, "x"], "a": "1", "b": "2"}) and not valid(schema, {"pair": [3, "x"], "a": "1"})
    # draft 7 ignores $ref's siblings; 2020-12 applies them
    assert valid({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"s": {}},
                  "$ref": "#/definitions/s", "type": "integer"}, "text")
    assert not valid({"$defs": {"s": {}}, "$ref": "#/$defs/s", "type": "integer"}, "text")


def test_local_references_of_every_kind_resolve():
    schema = {
        "$id": "https://example.com/root.json",
        "$defs": {
            "by_anchor": {"$anchor": "amount", "type": "number", "minimum": 0},
            "by_id": {"$id": "item.json", "type": "object", "properties": {"sku": {"type": "string"}},
                      "required": ["sku"], "additionalProperties": False},
        },
        "type": "object",
        "properties": {"total": {"$ref": "#amount"}, "item": {"$ref": "item.json"},
                       "again": {"$ref": "https://example.com/item.json"}},
        "required": ["total", "item"],
        "additionalProperties": False,
    }
    loaded = check_schema(schema)
    assert loaded.unenforced == []
    assert grammar_accepts(schema, '{"total":1.5,"item":{"sku":"x"}}')
    assert not grammar_accepts(schema, '{"total":-1,"item":{"sku":"x"}}')
    assert not grammar_accepts(schema, '{"total":1,"item":{"sku":"x","n":1}}')


def test_remote_references_are_refused_without_any_network(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("schema loading must never touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for ref in ("https://example.com/a.json", "other.json#/x"):
        with pytest.raises(SchemaError, match="remote references are never fetched"):
            check_schema({"not": {"properties": {"a": {"$ref": ref}}}})  # even where the grammar never looks


def test_a_property_named_like_a_keyword_is_a_property():
    schema = {"type": "object", "additionalProperties": False, "required": ["default", "enum", "const"],
              "properties": {"default": {"type": "integer"}, "enum": {"enum": ["a"]}, "const": {"const": 1},
                             "examples": {"type": "boolean"}}}
    assert grammar_accepts(schema, '{"default":3,"enum":"a","const":1}')
    assert not grammar_accepts(schema, '{"default":"x","enum":"a","const":1}')
    assert not grammar_accepts(schema, '{"default":3,"enum":"b","const":1}')


def test_boolean_schemas_and_null_answers():
    schema = {"properties": {"foo": True, "bar": False}}
    loaded = check_schema(schema)
    assert grammar_accepts(schema, '{"foo":[1,{"x":null}]}') and not grammar_accepts(schema, '{"bar":1}')
    assert parse_answer('{"foo":1}', loaded).valid
    for null_only in ({"type": "null"}, {"const": None}, {"enum": [None]}, {"anyOf": [{"type": "null"}, False]}):
        answer = parse_answer("null", check_schema(null_only))
        assert answer.valid and answer.data is None and grammar_accepts(null_only, "null")
    with pytest.raises(SchemaError, match="accepts no value"):
        check_schema(False)


# --------------------------------------------------------------------------------------------------
# numbers, keys and formats in the grammar
# --------------------------------------------------------------------------------------------------


def test_numbers_are_bounded_wherever_they_may_appear():
    for schema in ({}, {"type": "object"}, {"properties": {"a": {}}}, {"items": {"minimum": 0}}, True):
        assert not grammar_accepts(schema, "1e400") and not grammar_accepts(schema, '{"a":1e400}')
        assert not grammar_accepts(schema, "[1e400]") and not grammar_accepts(schema, '{"a":[2e15]}')
        assert grammar_accepts(schema, '{"a":[1.5,null,{"b":-3}]}')
    assert not grammar_accepts({"type": "number"}, str(NUMBER_LIMIT * 10))


def test_exact_decimal_multiples_and_exact_big_integer_bounds():
    cents = {"type": "number", "multipleOf": 0.01}
    assert valid(cents, -4.01) and valid(cents, 74.6) and valid(cents, 19.99) and not valid(cents, 1.005)
    assert grammar_accepts(cents, "4.01") and not grammar_accepts(cents, "1.005")  # llguidance 1.7: no negatives
    big = {"type": "integer", "minimum": 9007199254740993, "maximum": 9007199254740995}
    assert not grammar_accepts(big, "9007199254740992") and not grammar_accepts(big, "9007199254740996")
    assert grammar_accepts(big, "9007199254740994")
    assert valid(big, 9007199254740993) and not valid(big, 9007199254740992)
    assert check_schema({"type": "array", "maxItems": 2.0}).grammar["maxItems"] == 2  # 2.0 is an integer


def test_exclusive_bounds_survive_float_rounding():
    schema = {"type": "number", "exclusiveMaximum": 5, "exclusiveMinimum": 0}
    assert not grammar_accepts(schema, "4.99999999999999999999")  # would round to 5.0
    assert not grammar_accepts(schema, "0") and grammar_accepts(schema, "4.5")


def test_duplicate_keys_and_odd_numbers_are_never_valid():
    loaded = check_schema({"type": "object", "additionalProperties": {"type": "boolean"}, "minProperties": 2})
    assert parse_answer('{"a":false,"a":true}', loaded).errors == ["$: duplicate key 'a' in an object"]
    assert not parse_answer('{"a":true,"\\u0061":true}', loaded).valid
    assert not parse_answer("NaN", check_schema({})).valid and not parse_answer("1e999", check_schema({})).valid
    assert not parse_answer('"\\ud800"', check_schema({})).valid  # a lone surrogate cannot be printed


@pytest.mark.parametrize("fmt", sorted(formats.PATTERNS))
def test_format_patterns_are_subsets_of_the_checkers(fmt):
    """Random strings from each format's grammar pattern: Python reads the pattern alike and jsonschema's
    full checker (format-nongpl extras) accepts every one."""
    import jsonschema

    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert fmt in checker.checkers, f"jsonschema cannot check '{fmt}': is jsonschema[format-nongpl] installed?"
    rng = random.Random(fmt)
    for text in _random_strings(formats.grammar_pattern(fmt), rng, count=40):
        assert re.fullmatch(formats.grammar_pattern(fmt), text), (fmt, text)
        assert checker.conforms(text, fmt), (fmt, text)


def test_the_fallback_pattern_checks_never_accept_what_the_suite_rejects():
    """A broken install without the format extras checks by pattern: stricter, never laxer."""
    wrong = [(fmt, what, data) for fmt, what, data, ok in format_cases()
             if fmt in formats.PATTERNS and isinstance(data, str) and not ok
             and re.fullmatch(formats.grammar_pattern(fmt), data)]
    assert wrong == []


def _random_strings(pattern: str, rng: random.Random, count: int) -> list[str]:
    """Random walks through a pattern's grammar, byte by byte: any allowed byte, after 60 the closing quote."""
    import llguidance
    import llguidance.numpy as llnp
    import numpy as np
    from llguidance import LLMatcher

    from internvl_cli.decoding.constraints import json_grammar

    tokenizer = llguidance.LLTokenizer("byte")
    template = LLMatcher(tokenizer, json_grammar({"type": "string", "pattern": pattern}), log_level=0)
    quote = tokenizer.tokenize_bytes(b'"')[0]
    out = []
    for _ in range(count):
        matcher, data = template.deep_copy(), bytearray()
        for step in range(400):
            if matcher.is_stopped() or (step > 60 and matcher.is_accepting()):
                break
            bitmask = np.zeros(llnp.get_bitmask_shape(1, tokenizer.vocab_size), dtype=np.int32)
            llnp.fill_next_token_bitmask(matcher, bitmask, 0)
            bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: tokenizer.vocab_size].astype(bool)
            allowed = [t for t in np.nonzero(bits)[0].tolist() if t != tokenizer.eos_token]
            if not allowed:
                break
            token = quote if step > 60 and quote in allowed else rng.choice(allowed)
            assert matcher.consume_token(token)
            data += tokenizer.decode_bytes([token])
        if matcher.is_accepting():
            out.append(json.loads(bytes(data)))
    assert len(out) > count // 2
    return out


# --------------------------------------------------------------------------------------------------
# what the grammar leaves to validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "unenforced"), [
    ({"type": "array", "uniqueItems": True}, ["uniqueItems"]),
    ({"type": "array", "contains": {"type": "integer"}}, ["contains"]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, ["oneOf"]),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, []),  # disjoint types: oneOf is anyOf
    ({"not": {"type": "null"}}, []),  # not of a type: the other types
    ({"not": {"const": 3}}, ["not"]),
    ({"if": {"minimum": 3}, "then": {"multipleOf": 2}}, ["if"]),
    ({"dependentRequired": {"a": ["b"]}}, ["dependentRequired"]),
    ({"propertyNames": {"maxLength": 3}}, ["propertyNames"]),
    ({"properties": {"a": {}}, "unevaluatedProperties": False}, []),  # no applicator: additionalProperties
    ({"allOf": [{"properties": {"a": {}}}], "unevaluatedProperties": False}, ["unevaluatedProperties"]),
    ({"type": "string", "pattern": "^(?=a)"}, ["pattern"]),
    ({"type": "string", "pattern": "(a)\\1"}, ["pattern"]),
    ({"type": "string", "pattern": "\\bword"}, ["pattern"]),
    ({"type": "string", "pattern": "(?i)^abc$"}, []),
])
def test_unenforced_keywords_are_reported(schema, unenforced):
    assert check_schema(schema).unenforced == unenforced


def test_regex_features_the_engine_reads_differently_are_not_enforced():
    for pattern in ("\\D+", "[[:alpha:]]", "a++", "[a-z&&[^b]]", "x{,3}", "{", "(?x) a", "\\Z"):
        assert unsupported_regex(pattern), pattern
    for pattern in ("^[A-Z]{3}$", "^\\d{4}-\\d{2}$", "(?i)^ab|cd$", "^[^\\]]+$", "\\$\\{x\\}", "^(?P<y>[0-9]+)$"):
        assert unsupported_regex(pattern) is None, pattern


# --------------------------------------------------------------------------------------------------
# voting
# --------------------------------------------------------------------------------------------------


def test_votes_never_print_an_invalid_composite():
    """The issue's cases: three valid votes whose field-wise majority would be invalid."""
    totals = check_schema({"type": "object", "required": ["totals"], "properties": {"totals": {
        "type": "object", "additionalProperties": {"type": "number"}, "minProperties": 1}}})
    answers = [parse_answer(json.dumps({"totals": {key: 1}}), totals) for key in "abc"]
    chosen, how = choose_answer(answers, totals)
    assert how == "most-common" and chosen.data == {"totals": {"a": 1}} and totals.check(chosen.data) == []
    ids = check_schema({"properties": {"id": {"type": "integer"}}, "additionalProperties": {"type": "boolean"},
                        "required": ["id"], "minProperties": 3})
    answers = [parse_answer(json.dumps({"id": 1, k1: True, k2: False}), ids) for k1, k2 in ("ab", "cd", "ef")]
    chosen, _ = choose_answer(answers, ids)
    assert ids.check(chosen.data) == [] and len(chosen.data) == 3
    invalid = Answer({"totals": {}}, ["$.totals: {} should be non-empty"])
    chosen, how = choose_answer([invalid, answers[0], invalid], ids)
    assert how == "only" and chosen is answers[0]  # one bad vote does not spoil a valid one


def test_vote_results_are_always_validated_property():
    """Property test: for random answers of random small schemas, the chosen answer is valid whenever it
    claims to be, and valid whenever any answer was."""
    rng = random.Random(15)
    schemas = [check_schema(s) for s in (
        {"type": "object", "properties": {"a": {"type": "integer", "maximum": 5}}, "required": ["a"],
         "additionalProperties": {"type": "integer"}, "maxProperties": 2},
        {"type": "object", "additionalProperties": {"type": "boolean"}, "minProperties": 2},
        {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True, "maxItems": 2},
        {"anyOf": [{"type": "object", "required": ["x"]}, {"type": "object", "required": ["y"]}],
         "not": {"required": ["x", "y"]}},
    )]
    for _ in range(400):
        schema = rng.choice(schemas)
        answers = [parse_answer(json.dumps(_random_value(rng)), schema) for _ in range(rng.randint(1, 5))]
        chosen, how = choose_answer(answers, schema)
        if how != "none-valid":
            assert schema.check(chosen.data) == []
        assert (how == "none-valid") == (not any(a.valid for a in answers))


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.choice(["object", "object", "array", "int", "bool"] if depth == 0 else ["int", "bool"])
    if kind == "object":
        return {rng.choice("abxy"): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if kind == "array":
        return [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 3))]
    return rng.randint(0, 7) if kind == "int" else rng.random() < 0.5


def test_majority_vote_of_scalars_and_arrays():
    assert majority_vote([1, 2, 2]) == 2 and majority_vote([[1], [1], [2]]) == [1]
    assert majority_vote([None, None, 3]) is None


def test_reference_validator_agrees_on_a_known_case():
    assert reference_errors({"type": "number", "multipleOf": 0.01}, -4.01) == []
    assert reference_errors({"type": "string", "format": "date-time"}, "2023-02-29T10:00:00Z")


def test_unknown_formats_are_annotations_and_said_so():
    loaded = check_schema({"type": "string", "format": "currency"})
    assert loaded.unenforced == [] and any("format 'currency'" in w for w in loaded.warnings)
    assert parse_answer('"not checked"', loaded).valid


def test_the_decoder_never_repeats_a_key(tmp_path):
    """Random walks through a grammar with few possible keys (escaped spellings included): the processor
    refuses any token that would repeat a key of the object, so complete answers are valid and no row
    ever holds a repeated key (a row whose every way on repeats one ends, and is reported)."""
    import torch

    from internvl_cli.decoding.hf_processor import constraint_logits_processor
    from tiny_models import build_tokenizer

    tokenizer = build_tokenizer(tmp_path)
    schema = check_schema({"type": "object", "patternProperties": {"^[ab]{1,2}$": {"type": "boolean"}},
                           "additionalProperties": False, "minProperties": 3, "maxProperties": 4})
    assert schema.unenforced == []
    rows = 12
    processor = constraint_logits_processor(tokenizer, schema.constraint, rows, close_after=48)
    generator = torch.Generator().manual_seed(0)
    ids = torch.full((rows, 1), tokenizer.pad_token_id)
    for _ in range(80):
        token = processor(ids, torch.randn(rows, len(tokenizer), generator=generator)).argmax(dim=1)
        ids = torch.cat([ids, token[:, None]], dim=1)
    complete = 0
    for text, done, error in zip(processor.finalize(ids), processor.complete, processor.errors):
        keys = re.findall(r'"([^"]*)":', text)
        assert len(keys) == len(set(keys)), text
        if done:
            complete += 1
            assert parse_answer(text, schema).valid, text
        else:
            assert error is None or "repeats a key" in error, error
    assert complete >= rows // 2
