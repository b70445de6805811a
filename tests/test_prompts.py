"""Users' own prompts: --prompt / --anchored-prompt files or shipped names, checked before any model loads, part of
the task hash; `internvl prompts` lists the shipped ones; `inspect --prompt` shows exactly what a page is sent."""
from __future__ import annotations

import json

import pytest

from conftest import REPO, SAMPLES
from internvl_cli.errors import ExitCode, UsageError
from internvl_cli.tasks.prompts import PromptTemplate, anchor_paragraphs, prompt_set, shipped_prompt


def test_prompts_lists_the_shipped_ones_with_their_placeholders(cli):
    code, out, _ = cli("prompts", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert code == 0 and set(rows) == {"ocr", "ocr-anchored", "chart", "extract", "extract-anchored", "ground"}
    assert rows["ground"]["placeholders"] == ["line"] and rows["ground"]["option"] == "--lines"
    assert rows["ocr-anchored"]["placeholders"] == ["text_layer"]
    assert rows["extract-anchored"]["placeholders"] == ["fields", "page_note", "text_layer"]
    assert rows["chart"]["placeholders"] == [] and rows["ocr"]["option"] == "--prompt"
    code, out, _ = cli("prompts", "ocr")
    assert code == 0 and out == (REPO / "prompts" / "ocr.md").read_text().rstrip() + "\n"
    code, _, err = cli("prompts", "nope")
    assert code == ExitCode.BAD_ARGS and "ocr-anchored" in err


def test_placeholders_fill_once_and_braces_stay_literal():
    template = PromptTemplate('Fields:\n{fields}\nExample: {"total": 1} and {{fields}}\n{text_layer}', "t")
    assert template.placeholders == {"fields", "text_layer"}
    # a text layer that itself says "{fields}" is not filled again
    assert template.fill(fields="- total", text_layer="{fields}") == (
        'Fields:\n- total\nExample: {"total": 1} and {fields}\n{fields}')


def test_shipped_anchored_prompts_are_the_plain_ones_plus_the_text_layer_paragraphs():
    for command in ("ocr", "extract"):
        assert shipped_prompt(f"{command}-anchored").text == shipped_prompt(command).text + anchor_paragraphs(command)
        assert prompt_set(command, command).anchored.text == shipped_prompt(f"{command}-anchored").text


def test_own_prompt_keeps_the_text_layer_anchor_unless_told_otherwise(tmp_path):
    mine = tmp_path / "mine.md"
    mine.write_text("Transcribe this page as HTML.\n")
    prompts = prompt_set("ocr", str(mine))
    assert prompts.plain.text == "Transcribe this page as HTML."
    assert prompts.anchored.text.startswith("Transcribe this page as HTML.\n\nThe PDF's embedded text layer")
    own = tmp_path / "anchored.md"
    own.write_text("Page text: {text_layer}\nNow transcribe it.")
    assert prompt_set("ocr", str(mine), str(own)).anchored.text == own.read_text()


@pytest.mark.parametrize("command,text,option,fragment", [
    ("ocr", "Read {page}.", "--prompt", "unknown placeholder {page}"),
    ("ocr", "Layer: {text_layer}", "--prompt", "--anchored-prompt"),
    ("ocr", "No layer here.", "--anchored-prompt", "must contain {text_layer}"),
    ("extract", "Fields {fields} and {schema}", "--prompt", "allowed here: {fields}, {page_note}"),
    ("chart", "  \n", "--prompt", "empty"),
])
def test_a_bad_prompt_is_a_clear_error_before_any_model_loads(cli, tmp_path, command, text, option, fragment):
    prompt = tmp_path / "prompt.md"
    prompt.write_text(text)
    args = [command, SAMPLES / "chart.png", option, prompt, "--model", "/nonexistent"]
    if command == "extract":
        args += ["--schema", "invoice"]
    code, out, err = cli(*args)
    assert code == ExitCode.BAD_ARGS, err  # not MODEL_NOT_FOUND: nothing was loaded
    assert fragment in err and str(prompt) in err and err.count("\n") == 1 and out == ""


def test_missing_prompt_file_names_the_shipped_ones(cli):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--prompt", "no-such.md", "--model", "/nonexistent")
    assert code == ExitCode.BAD_ARGS and "no-such.md" in err and "internvl prompts" in err
    code, _, err = cli("chart", SAMPLES / "chart.png", "--anchored-prompt", "x", "--model", "/nonexistent")
    assert code == ExitCode.BAD_ARGS and "No such option" in err  # chart has no text-layer prompt
    with pytest.raises(UsageError):
        prompt_set("chart", None, "ocr-anchored")


def test_own_prompt_changes_the_task_hash(cli, tiny_model, tmp_path):
    mine = tmp_path / "mine.md"
    mine.write_text("Transcribe this page as HTML.")
    out = tmp_path / "out"
    args = ("ocr", SAMPLES / "chart.png", "--model", tiny_model, "--max-new-tokens", "4", "-o", out)
    assert cli(*args)[0] == 0
    code, _, err = cli(*args, "--prompt", mine)
    assert code == 0 and "already done" not in err  # new prompt text: done again
    code, _, err = cli(*args, "--prompt", mine)
    assert code == 0 and "already done" in err
    mine.write_text("Transcribe this page as LaTeX.")  # same file, other text
    code, _, err = cli(*args, "--prompt", mine)
    assert code == 0 and "already done" not in err


def test_inspect_prompt_shows_exactly_what_a_page_is_sent(cli, tiny_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from internvl_cli.engine import hf

    def no_weights(*args, **kwargs):
        raise AssertionError("inspect --prompt must not load weights")

    monkeypatch.setattr(hf, "_load_model", no_weights)
    mine = tmp_path / "mine.md"
    mine.write_text("Read the page. Literal {{text_layer}} braces.")
    code, out, err = cli("inspect", SAMPLES / "invoice.pdf", "--prompt", mine, "--model", tiny_model, "--json",
                         "--max-tiles", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["pages"] for row in rows] == [[1], [2]] and rows[0]["source"] == "vision+text-layer"
    first = rows[0]
    assert "Read the page. Literal {text_layer} braces.\n\nThe PDF's embedded text layer" in first["prompt"]
    assert "ACME Office Supplies" in first["prompt"]  # the page's own text layer
    assert f"<img><IMG_CONTEXT>*{256 * first['tiles']}</img>" in first["prompt"]
    assert first["image_tokens"] == 256 * first["tiles"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expanded = first["prompt"].replace(f"<IMG_CONTEXT>*{first['image_tokens']}",
                                       "<IMG_CONTEXT>" * first["image_tokens"])
    assert first["prompt_tokens"] == len(tokenizer(expanded).input_ids)
    assert first["text_tokens"] == first["prompt_tokens"] - first["image_tokens"]
    assert first["context"] == 16384 and first["max_new_tokens"] == 4096
    code, text, _ = cli("inspect", SAMPLES / "invoice.pdf", "--prompt", "ocr", "--model", tiny_model,
                        "--pages", "1")
    assert code == 0 and text.startswith("<!-- file: ") and "| ocr | source: vision+text-layer" in text
    assert "prompt: " in text and "<|im_start|>assistant\n" in text


def test_inspect_prompt_for_extract_and_chart(cli, tiny_model):
    code, out, err = cli("inspect", SAMPLES / "invoice.pdf", "--prompt", "extract", "--schema", "invoice",
                         "--model", tiny_model, "--json", "--no-text-layer")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1 and rows[0]["pages"] == [1, 2] and rows[0]["source"] == "vision"
    assert "- invoice_number" in rows[0]["prompt"] and "pages 1-2 of 2" in rows[0]["prompt"]
    assert rows[0]["prompt"].count("<img>") == 2
    code, _, err = cli("inspect", SAMPLES / "invoice.pdf", "--prompt", "extract", "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and "--schema" in err
    code, _, err = cli("inspect", SAMPLES / "chart.png", "--prompt", "chart", "--task", "ocr", "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and "`chart`" in err
