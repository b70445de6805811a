"""`internvl ocr` and `internvl inspect` driven as a user would, on samples and broken files, with a real tiny model."""
from __future__ import annotations

import json

import pytest

import awkward
from conftest import SAMPLES
from internvl_cli.errors import ExitCode


def test_ocr_pdf_prints_one_section_per_page(cli, tiny_model):
    code, out, err = cli("ocr", SAMPLES / "invoice.pdf", "--model", tiny_model, "--max-new-tokens", "8")
    assert code == 0, err
    headers = [line for line in out.splitlines() if line.startswith("<!-- file:")]
    assert len(headers) == 2
    assert "page: 1/2" in headers[0] and "page: 2/2" in headers[1]
    assert "source: vision+text-layer" in headers[0]  # the born-digital PDF has a text layer
    assert "internvl:" not in out  # progress stays on stderr


def test_ocr_jsonl_gives_one_valid_record_per_page(cli, tiny_model):
    code, out, err = cli("ocr", SAMPLES / "invoice.pdf", SAMPLES / "chart.png", "--model", tiny_model,
                         "--format", "jsonl", "--max-new-tokens", "8")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["file"].split("/")[-1], r["page"]) for r in records] == [
        ("invoice.pdf", 1), ("invoice.pdf", 2), ("chart.png", 1)]
    for record in records:
        assert {"file", "page", "text", "tiles", "image_tokens", "seconds", "flags", "source"} <= record.keys()
        assert record["image_tokens"] == 256 * record["tiles"]
    assert records[2]["source"] == "vision" and records[2]["grid"] == [3, 2]


def test_several_documents_default_to_jsonl(cli, tiny_model):
    code, out, _ = cli("ocr", SAMPLES / "chart.png", SAMPLES / "receipt.jpg", "--model", tiny_model,
                       "--max-new-tokens", "4")
    assert code == 0
    assert [json.loads(line)["page"] for line in out.splitlines()] == [1, 1]


def test_text_format_separates_pages_with_form_feeds(cli, tiny_model):
    code, out, _ = cli("ocr", SAMPLES / "invoice.pdf", "--model", tiny_model, "--format", "text",
                       "--max-new-tokens", "4", "--no-text-layer")
    assert code == 0 and out.count("\f") == 1


def test_no_text_layer_option_takes_the_vision_path(cli, tiny_model):
    code, out, _ = cli("ocr", SAMPLES / "invoice.pdf", "--model", tiny_model, "--format", "jsonl",
                       "--max-new-tokens", "4", "--no-text-layer", "--pages", "1")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in records] == ["vision"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return awkward.make_all(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name,code,fragment", [
    ("text_as_pdf", ExitCode.INPUT_FILE, "not a PDF"),
    ("truncated_pdf", ExitCode.INPUT_FILE, "corrupt"),
    ("zero_page_pdf", ExitCode.INPUT_FILE, "no pages"),
    ("empty_png", ExitCode.INPUT_FILE, "empty"),
    ("decompression_bomb", ExitCode.INPUT_FILE, "megapixel"),
    ("user_password_pdf", ExitCode.PASSWORD, "needs a password"),
])
def test_bad_input_gives_one_line_and_its_exit_code(cli, tiny_model, bad, name, code, fragment):
    exit_code, out, err = cli("ocr", bad[name], "--model", tiny_model, "--max-new-tokens", "4")
    assert exit_code == code
    errors = [line for line in err.splitlines() if line.startswith("internvl: error:")]
    assert len(errors) == 1 and str(bad[name]) in errors[0] and fragment in errors[0]
    assert "Traceback" not in err and out == ""


def test_missing_file_and_wrong_password(cli, tiny_model, bad, tmp_path):
    code, _, err = cli("ocr", tmp_path / "missing.pdf", "--model", tiny_model)
    assert code == ExitCode.INPUT_FILE and "file not found" in err
    code, _, err = cli("ocr", bad["user_password_pdf"], "--password", "nope", "--model", tiny_model)
    assert code == ExitCode.PASSWORD and "wrong password" in err
    code, out, _ = cli("ocr", bad["user_password_pdf"], "--password", "secret", "--model", tiny_model,
                       "--max-new-tokens", "2", "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 3


def test_one_bad_file_never_stops_the_others(cli, tiny_model, bad):
    code, out, err = cli("ocr", SAMPLES / "chart.png", bad["truncated_pdf"], bad["owner_password_pdf"],
                         "--model", tiny_model, "--max-new-tokens", "4", "--format", "jsonl")
    assert code == ExitCode.PARTIAL
    files = [json.loads(line)["file"] for line in out.splitlines()]
    assert files[0].endswith("chart.png") and files[-1].endswith("owner-only-encrypted.pdf")
    assert err.count("internvl: error:") == 1 and "truncated.pdf" in err


def test_unresolvable_model_explains_how_to_work_offline(cli, tmp_path):
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--model", "OpenGVLab/not-a-real-model")
    assert code == ExitCode.MODEL_NOT_FOUND
    assert "HF_HUB_OFFLINE" in err and "--model PATH" in err and out == ""


def test_not_a_checkpoint_directory(cli, tmp_path):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", tmp_path)
    assert code == ExitCode.MODEL_LOAD and "config.json" in err


def test_bad_arguments_fail_before_loading_the_model(cli):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--pages", "3-1", "--model", "/nonexistent")
    assert code == ExitCode.BAD_ARGS and "--pages" in err
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--format", "pdf", "--model", "/nonexistent")
    assert code == ExitCode.BAD_ARGS


def test_a_mistyped_path_is_reported_before_the_model_is_resolved(cli, tmp_path):
    # the assembly discovers the inputs first: a preset that needs a download is never waited for
    for command in (("ocr",), ("chart",), ("extract", "--schema", "invoice")):
        code, out, err = cli(*command, tmp_path / "nothere.pdf", "--model", "/nonexistent")
        assert code == ExitCode.INPUT_FILE and "nothere.pdf" in err and out == "", command
        assert "/nonexistent" not in err and "loading model" not in err, command


def test_inspect_matches_the_tiling_and_needs_no_model(cli):
    code, out, err = cli("inspect", SAMPLES / "invoice.pdf", SAMPLES / "chart.png", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["page"], r["grid"], r["tiles"], r["image_tokens"], r["text_layer"]) for r in rows] == [
        (1, [2, 3], 7, 1792, True), (2, [2, 3], 7, 1792, True), (1, [3, 2], 7, 1792, False)]
    code, out, _ = cli("inspect", SAMPLES / "chart.png", "--json", "--max-tiles", "4")
    assert json.loads(out)["grid"] == [2, 1] and json.loads(out)["tiles"] == 3  # 800x500 is closest to 2:1


def test_inspect_reports_bad_files_and_continues(cli, bad):
    code, out, err = cli("inspect", bad["truncated_pdf"], SAMPLES / "chart.png", "--json")
    assert code == ExitCode.PARTIAL and len(out.splitlines()) == 1 and "truncated.pdf" in err


def test_inspect_missing_file_exit_code(cli, tmp_path):
    code, out, err = cli("inspect", tmp_path / "missing.pdf", "--json")
    assert code == ExitCode.INPUT_FILE and out == "" and "missing.pdf" in err


def test_verbose_adds_the_traceback(cli):
    code, _, err = cli("--verbose", "ocr", SAMPLES / "chart.png", "--model", "OpenGVLab/not-a-real-model")
    assert code == ExitCode.MODEL_NOT_FOUND and "Traceback" in err
    assert err.splitlines()[0].startswith("internvl: error:")


def test_a_looping_page_is_retried_once_and_flagged(cli, tiny_model):
    # Greedy decoding of the random tiny model repeats one token: the page loops, is cut, and retried once
    # with light sampling, as olmOCR does; the record says so. (A loop counts only once it is longer than a
    # page could be, 2,048 tokens by default: --loop-tokens brings that within this short budget.)
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--model", tiny_model, "--format", "jsonl",
                         "--max-new-tokens", "120", "--loop-tokens", "64")
    record = json.loads(out)
    assert code == 0, err
    assert "retried" in record["flags"]


def test_inspect_reads_the_checkpoint_tiling_without_weights(cli, tiny_model, tmp_path):
    import shutil

    checkpoint = tmp_path / "four-tiles"
    shutil.copytree(tiny_model, checkpoint)
    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    config["max_patches"] = 4
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(config))
    (checkpoint / "model.safetensors").unlink()  # proves no weights are read
    code, out, err = cli("inspect", SAMPLES / "invoice.pdf", "--pages", "1", "--json", "--model", checkpoint)
    assert code == 0, err
    assert json.loads(out)["grid"] == [1, 2] and json.loads(out)["tiles"] == 3  # A4 with at most 4 tiles
