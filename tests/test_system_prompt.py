"""The system turn: a converted official checkpoint prompts exactly as the original InternVL template does (system
message included), token for token; users can replace it (--system TEXT|FILE) or drop it (--no-system)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLES
from internvl_cli.models.prompting import build_prompt, default_system_message
from internvl_cli.errors import ExitCode
from internvl_cli.models.convert import (
    CONVERTER_VERSION, MARKER_FILE, NATIVE_CHAT_TEMPLATE, convert_checkpoint, native_chat_template,
)
from tiny_official import OFFICIAL_CHAT_TEMPLATE, SYSTEM_PROMPT, build_tiny_official

QUESTION = "Transcribe everything written on this document page as Markdown."
SEQ = 256


@pytest.fixture(scope="module")
def official(tiny_model, tmp_path_factory) -> Path:
    return build_tiny_official(tmp_path_factory.mktemp("official") / "InternVL3-tiny", native_dir=tiny_model)


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory) -> Path:
    return convert_checkpoint(official, tmp_path_factory.mktemp("converted") / "native")


@pytest.fixture(scope="module")
def tokenizers(official, converted):
    """(the official checkpoint's own tokenizer, the converted checkpoint's)."""
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    # The official tokenizer class is named in its tokenizer_config.json; loading it by class never reads the
    # remote-code config.json.
    return Qwen2TokenizerFast.from_pretrained(official), AutoTokenizer.from_pretrained(converted)


def chat_query(system: str | None, question: str, tiles: list[int]) -> str:
    """What the original `model.chat()` builds: the `internvl2_5` conversation template (MPT separators) with
    `<image>\\n` before the question, each `<image>` then replaced by its image tokens."""
    question = "".join("<image>\n" for _ in tiles) + question
    query = ""
    if system is not None:
        query += "<|im_start|>system\n" + system + "<|im_end|>\n"
    query += "<|im_start|>user\n" + question + "<|im_end|>\n" + "<|im_start|>assistant\n"
    for count in tiles:
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (SEQ * count) + "</img>", 1)
    return query


def official_template(tokenizer, messages: list[dict], tiles: list[int]) -> str:
    """The official tokenizer_config.json chat template, images spliced in as the remote code does."""
    text = tokenizer.apply_chat_template(messages, chat_template=OFFICIAL_CHAT_TEMPLATE, add_generation_prompt=True,
                                         tokenize=False)
    for count in tiles:
        text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (SEQ * count) + "</img>", 1)
    return text


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("tiles", [[1], [7], [3, 2]])
def test_converted_prompt_equals_the_original_template_with_its_system_turn(tokenizers, tiles):
    official_tok, ours = tokenizers
    prompt = build_prompt(ours, QUESTION, tiles, SEQ)
    user = "".join("<image>\n" for _ in tiles) + QUESTION
    reference = official_template(official_tok, [{"role": "user", "content": user}], tiles)
    assert reference.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n")
    assert ids(ours, prompt) == ids(official_tok, reference)
    assert ids(ours, prompt) == ids(official_tok, chat_query(SYSTEM_PROMPT, QUESTION, tiles))


def test_own_system_message_replaces_the_default_as_the_original_does(tokenizers):
    official_tok, ours = tokenizers
    mine = "You are a careful transcriber. Answer in German."
    prompt = build_prompt(ours, QUESTION, [2], SEQ, system=mine)
    messages = [{"role": "system", "content": mine}, {"role": "user", "content": "<image>\n" + QUESTION}]
    assert ids(ours, prompt) == ids(official_tok, official_template(official_tok, messages, [2]))
    assert ids(ours, prompt) == ids(official_tok, chat_query(mine, QUESTION, [2]))  # model.system_message = mine


def test_no_system_turn_equals_the_hf_checkpoints_prompt(tokenizers, tiny_model):
    from transformers import AutoTokenizer

    official_tok, ours = tokenizers
    prompt = build_prompt(ours, QUESTION, [2], SEQ, system="")
    assert "system" not in prompt
    assert ids(ours, prompt) == ids(official_tok, chat_query(None, QUESTION, [2]))
    hf = AutoTokenizer.from_pretrained(tiny_model)  # the -hf layout: its template has no system turn
    assert build_prompt(hf, QUESTION, [2], SEQ) == prompt
    assert build_prompt(hf, QUESTION, [2], SEQ, system="Be brief.") == build_prompt(ours, QUESTION, [2], SEQ,
                                                                                  system="Be brief.")


def test_converter_stores_the_system_message_with_the_checkpoint(converted, tokenizers):
    _, ours = tokenizers
    marker = json.loads((converted / MARKER_FILE).read_text())
    assert marker["system_message"] == SYSTEM_PROMPT and marker["converter_version"] == CONVERTER_VERSION >= 2
    assert ours.chat_template == native_chat_template(SYSTEM_PROMPT)
    assert default_system_message(ours) == SYSTEM_PROMPT


@pytest.mark.parametrize("case", ["no-template-conversation-name", "template-without-system", "quotes"])
def test_the_system_message_is_read_from_what_the_source_has(official, tmp_path, case):
    from transformers import AutoTokenizer

    source = tmp_path / "source"
    shutil.copytree(official, source)
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    expected = SYSTEM_PROMPT
    if case == "no-template-conversation-name":
        tokenizer_config.pop("chat_template")  # config.json still names the `internvl2_5` conversation template
    elif case == "template-without-system":
        tokenizer_config["chat_template"] = OFFICIAL_CHAT_TEMPLATE.split("{% if loop.first")[0] + (
            "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
        expected = None
    else:
        expected = 'Say "hi" \\ and {{ nothing }} else.\nSecond line.'
        tokenizer_config["chat_template"] = OFFICIAL_CHAT_TEMPLATE.replace(SYSTEM_PROMPT, expected.replace(
            "\\", "\\\\").replace("\n", "\\n").replace("'", "\\'"))
    (source / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    out = convert_checkpoint(source, tmp_path / "out")
    assert json.loads((out / MARKER_FILE).read_text())["system_message"] == expected
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert default_system_message(tokenizer) == expected
    if expected is None:
        assert tokenizer.chat_template == NATIVE_CHAT_TEMPLATE


# ---------------------------------------------------------------------------------------------- the CLI


def _prompt_of(cli, *args) -> dict:
    code, out, err = cli("inspect", SAMPLES / "chart.png", "--prompt", "chart", "--json", *args)
    assert code == 0, err
    return json.loads(out.splitlines()[0])


def test_system_options_on_the_command_line(cli, official, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))
    default = _prompt_of(cli, "--model", official)
    assert default["prompt"].startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n")
    assert default["system"] is None
    mine = tmp_path / "system.txt"
    mine.write_text("Reply with data only.\n")
    from_file = _prompt_of(cli, "--model", official, "--system", mine)
    assert from_file["prompt"].startswith("<|im_start|>system\nReply with data only.<|im_end|>\n")
    inline = _prompt_of(cli, "--model", official, "--system", "Reply with data only.")
    assert inline["prompt"] == from_file["prompt"]
    none = _prompt_of(cli, "--model", official, "--no-system")
    assert none["prompt"].startswith("<|im_start|>user\n") and none["prompt_tokens"] < default["prompt_tokens"]
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", "/nonexistent", "--system", "x", "--no-system")
    assert code == ExitCode.BAD_ARGS and "--no-system" in err
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", "/nonexistent", "--system", " ")
    assert code == ExitCode.BAD_ARGS and "empty" in err


def test_system_message_is_part_of_the_task_hash(cli, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ("ocr", SAMPLES / "chart.png", "--model", tiny_model, "--max-new-tokens", "4", "-o", out)
    assert cli(*args)[0] == 0
    code, _, err = cli(*args)
    assert code == 0 and "already done" in err
    code, _, err = cli(*args, "--system", "Be brief.")
    assert code == 0 and "already done" not in err
    code, _, err = cli(*args, "--no-system")
    assert code == 0 and "already done" not in err
