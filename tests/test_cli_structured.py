"""`internvl extract` and `internvl chart` on the tiny model: output always parses and validates (or says why not)."""
from __future__ import annotations

import csv
import io
import json
import shutil

from conftest import SAMPLES
from internvl_cli.errors import ExitCode
from internvl_cli.schema.loading import load_schema


def test_extract_prints_one_schema_valid_line_per_document(cli, tiny_model):
    code, out, err = cli("extract", SAMPLES, "--schema", "invoice", "--model", tiny_model)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 4  # chart, invoice, receipt, scanned letter
    schema = load_schema("invoice")
    for record in records:
        assert {"file", "pages", "data", "valid", "errors", "flags", "unenforced", "model", "seconds"} <= record.keys()
        assert record["valid"] and record["errors"] == [] and schema.check(record["data"]) == []
        assert record["unenforced"] == []  # the shipped schemas are enforced in full
    # Random weights loop inside strings; those answers were wrapped up by the grammar, and say so.
    assert all("closed-early" in record["flags"] for record in records)
    assert [r["pages"] for r in records if r["file"].endswith("invoice.pdf")] == [2]


def test_a_budget_too_small_for_the_schema_is_refused_before_loading(cli, tmp_path):
    code, out, err = cli("extract", SAMPLES / "receipt.jpg", "--schema", "receipt", "--model", "/nonexistent",
                         "--max-new-tokens", "3")
    assert code == ExitCode.BAD_ARGS and out == "" and "too small for schema receipt" in err
    assert "loading model" not in err and "--max-new-tokens" in err


def test_a_short_context_model_gets_a_window_sized_to_it(cli, tiny_model, tmp_path):
    # 6 pages of 24 tiles do not fit 8,192 tokens: the default window shrinks, and stderr says so once
    short = tmp_path / "context-8k"
    shutil.copytree(tiny_model, short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 8192
    (short / "config.json").write_text(json.dumps(config))
    code, out, err = cli("extract", SAMPLES / "invoice.pdf", "--schema", "vendor, total float", "--model", short,
                         "--max-new-tokens", "64")
    assert code == 0, err
    assert err.count("windows sized to fit") == 1 and "context of 8192 tokens" in err
    record = json.loads(out)
    assert record["pages"] == 2 and record["valid"]
    # a window the user chose is kept, so one that cannot fit is refused before the weights load, as before
    code, out, err = cli("extract", SAMPLES / "invoice.pdf", "--schema", "vendor, total float", "--model", short,
                         "--max-new-tokens", "64", "--window-tiles", "24")
    assert code == ExitCode.BAD_ARGS and "cannot fit the model's context of 8192" in err and out == ""
    assert "model ready" not in err


def test_votes_sample_several_answers(cli, tiny_model, tmp_path):
    schema = tmp_path / "small.json"
    schema.write_text(json.dumps({
        "type": "object", "additionalProperties": False, "required": ["kind", "count"],
        "properties": {"kind": {"enum": ["invoice", "receipt", "letter"]},
                       "count": {"type": "integer", "minimum": 0, "maximum": 9}}}))
    code, out, err = cli("extract", SAMPLES / "chart.png", "--schema", schema, "--model", tiny_model,
                         "--votes", "3", "--max-new-tokens", "40")
    record = json.loads(out)
    assert code == 0, err
    assert record["valid"] and record["data"]["kind"] in ("invoice", "receipt", "letter")


def test_bad_schema_fails_before_the_model_loads(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = cli("extract", SAMPLES / "chart.png", "--schema", bad, "--model", "/nonexistent")
    assert code == ExitCode.SCHEMA and "bad.json" in err and "loading model" not in err
    remote = tmp_path / "remote.json"
    remote.write_text(json.dumps({"$ref": "https://example.com/schema.json"}))
    code, _, err = cli("extract", SAMPLES / "chart.png", "--schema", remote, "--model", "/nonexistent")
    assert code == ExitCode.SCHEMA and "remote.json" in err


def test_schemas_lists_the_shipped_ones(cli):
    code, out, _ = cli("schemas")
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert code == 0 and {"invoice", "receipt", "key_value"} <= set(names)


def test_schemas_show_prints_a_shipped_schema_and_explains_concise_ones(cli):
    code, out, _ = cli("schemas", "show", "receipt")
    assert code == 0 and json.loads(out) == load_schema("receipt").schema
    code, out, _ = cli("schemas", "show", "vendor, total float: grand total, due date?")
    shown = json.loads(out)
    assert code == 0 and shown["required"] == ["vendor", "total"]
    assert shown["properties"]["total"] == {"type": "number", "description": "grand total"}
    assert shown["properties"]["due"] == {"type": "string", "format": "date"}
    code, out, err = cli("schemas", "show", '{"type": "array", "uniqueItems": true}', "--grammar")
    assert code == 0 and "uniqueItems" not in out and "not enforced (validated): uniqueItems at $" in err
    code, _, err = cli("schemas", "show", "no_such_schema")
    assert code == ExitCode.SCHEMA and "shipped: invoice, key_value, receipt" in err


def test_chart_csv_is_rectangular_and_parses(cli, tiny_model):
    code, out, err = cli("chart", SAMPLES / "chart.png", "--format", "csv", "--model", tiny_model,
                         "--max-new-tokens", "60")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows and all(len(row) == len(rows[0]) for row in rows)


def test_chart_json_and_markdown(cli, tiny_model):
    code, out, _ = cli("chart", SAMPLES / "chart.png", "--format", "json", "--model", tiny_model,
                       "--max-new-tokens", "40")
    record = json.loads(out)
    assert code == 0 and all(len(row) == len(record["columns"]) for row in record["rows"])
    code, out, _ = cli("chart", SAMPLES / "chart.png", "--format", "markdown", "--model", tiny_model,
                       "--max-new-tokens", "40")
    lines = out.strip().splitlines()
    assert code == 0 and lines[1].startswith("| ---") and len({line.count(" | ") for line in lines}) == 1


def test_long_documents_are_read_in_windows_and_merged(cli, tiny_model, tmp_path):
    import awkward

    pdf = awkward.make_mixed_text_layer_pdf(tmp_path)  # 3 pages
    schema = tmp_path / "doc.json"
    schema.write_text(json.dumps({
        "type": "object", "additionalProperties": False, "required": ["kind", "items"],
        "properties": {"kind": {"enum": ["memo", "form"]},
                       "items": {"type": "array", "maxItems": 2, "items": {"type": "integer", "minimum": 0,
                                                                          "maximum": 9}}}}))
    code, out, err = cli("extract", pdf, "--schema", schema, "--model", tiny_model, "--window-pages", "1",
                         "--max-new-tokens", "40")
    record = json.loads(out)
    assert code == 0, err
    assert record["pages"] == 3 and record["valid"]
    # Merge rule: arrays from the three windows are concatenated, so up to 3 x 2 items survive.
    assert len(record["data"]["items"]) <= 6
