"""Shell-grade behaviour (issue 12): pipes, exit codes, option checks, progress, notes and help, driven as a user would.

Each numbered test group matches a defect a new user ran into; the test reproduces what they typed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import awkward
from conftest import REPO, SAMPLES, make_inbox
from internvl_cli.errors import ExitCode


def internvl(*args) -> list[str]:
    return [sys.executable, "-m", "internvl_cli.cli", *map(str, args)]


def env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **extra}


def run_with_closed_stdout(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs with a stdout pipe whose reader is already gone: every write meets EPIPE, as after `| head`."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(args, stdout=writer, stderr=subprocess.PIPE, text=True, env=env(), timeout=300,
                              **kwargs)
    finally:
        os.close(writer)


def outputs(out: Path) -> list[str]:
    """Finished output files; a temp file being written is not one (a signal may still remove it)."""
    from internvl_cli.runs.outputs import is_temp_name

    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and ".internvl" not in p.parts and not is_temp_name(p.name))


def ledger_rows(out: Path) -> list[tuple]:
    with sqlite3.connect(out / ".internvl" / "ledger.sqlite3") as db:
        return sorted(db.execute("SELECT source_path, status, attempts, output_path FROM jobs").fetchall())


# -- 1. a closed pipe is not a bug ---------------------------------------------------------------------


def test_inspect_into_a_closed_pipe_exits_quietly_with_141():
    done = run_with_closed_stdout(internvl("inspect", SAMPLES / "invoice.pdf", SAMPLES / "chart.png"))
    assert done.returncode == ExitCode.CLOSED_PIPE == 141
    assert done.stderr == ""  # no traceback, no "report it"


def test_ocr_into_a_closed_pipe_exits_quietly_with_141(tiny_model):
    done = run_with_closed_stdout(internvl("-q", "ocr", SAMPLES / "chart.png", SAMPLES / "receipt.jpg",
                                           "--model", tiny_model, "--max-new-tokens", "4"))
    assert done.returncode == 141
    # (third-party import chatter under -q is the engine's to silence; nothing of ours may appear)
    assert "internvl:" not in done.stderr and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_reader_that_leaves_early_still_leaves_a_correct_ledger(tiny_model, tmp_path):
    inbox = make_inbox(tmp_path / "inbox", 8)
    out = tmp_path / "out"
    args = internvl("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--batch-size", "1")
    # `internvl ocr ... 2>&1 | head -n N`: the reader reads until the first document is done, then goes away.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    for line in proc.stderr:
        if b"[1/8]" in line:
            break
    proc.stderr.close()
    assert proc.wait(timeout=300) == ExitCode.CLOSED_PIPE
    rows = ledger_rows(out)
    done = [row for row in rows if row[1] == "done"]
    assert 1 <= len(done) < 8, rows
    assert outputs(out) == sorted(row[3] for row in done)  # every output recorded, every record has its output
    assert all(status in ("done", "running") for _, status, _, _ in rows)
    rerun = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = ledger_rows(out)
    assert [status for _, status, _, _ in rows] == ["done"] * 8 and len(outputs(out)) == 8
    assert all(attempts == 1 for source, _, attempts, _ in rows if source in {d[0] for d in done})


# -- 2. unusable output locations -----------------------------------------------------------------------


def test_output_naming_an_existing_file_is_its_own_error(cli, tiny_model, tmp_path):
    existing = tmp_path / "results"
    existing.write_text("keep me")
    code, out, err = cli("ocr", SAMPLES / "chart.png", "-o", existing, "--model", tiny_model)
    assert code == ExitCode.OUTPUT == 13
    assert "is a file" in err and "directory" in err and "report it" not in err
    assert "loading model" not in err and existing.read_text() == "keep me"


def test_output_under_proc_cannot_be_created(cli, tiny_model):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "-o", "/proc/internvl-test/out", "--model", tiny_model)
    assert code == ExitCode.OUTPUT and "cannot create" in err and "report it" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(cli, tiny_model, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code, _, err = cli("ocr", SAMPLES / "chart.png", "-o", folder, "--model", tiny_model)
    assert code == ExitCode.OUTPUT and "not writable" in err


def test_output_file_for_one_document(cli, tiny_model, tmp_path):
    target = tmp_path / "result.md"
    code, out, err = cli("ocr", SAMPLES / "invoice.pdf", "-o", target, "--model", tiny_model,
                         "--max-new-tokens", "4")
    assert code == 0, err
    assert target.is_file() and target.read_text().count("<!-- file:") == 2 and out == ""
    code, _, err = cli("ocr", SAMPLES / "invoice.pdf", SAMPLES / "chart.png", "-o", tmp_path / "two.md",
                       "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and "directory" in err and "loading model" not in err
    assert not (tmp_path / "two.md").exists()  # never a folder named two.md/


def test_output_file_suffix_picks_the_ocr_format(cli, tiny_model, tmp_path):
    target = tmp_path / "page.txt"
    code, _, err = cli("ocr", SAMPLES / "chart.png", "-o", target, "--model", tiny_model, "--max-new-tokens", "4")
    assert code == 0, err
    assert "<!--" not in target.read_text()


# -- 3. bad option values are usage errors, found before anything loads --------------------------------


@pytest.mark.parametrize("option,value", [("--device", "tpu"), ("--device", "cuda:x"), ("--dtype", "float8")])
def test_bad_device_or_dtype_is_a_usage_error(cli, tiny_model, option, value):
    code, out, err = cli("ocr", SAMPLES / "chart.png", option, value, "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and option in err and out == ""
    assert "loading model" not in err and "Traceback" not in err


def test_asking_for_a_gpu_that_is_not_there_is_a_device_error(cli, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--device", "cuda", "--model", tiny_model)
    assert code == ExitCode.DEVICE and out == "" and "--device cuda" in err and len(err.strip().splitlines()) <= 2


# -- 4. progress lines show each document's own page count ---------------------------------------------


def test_progress_lines_count_each_documents_pages(cli, tiny_model):
    code, _, err = cli("ocr", SAMPLES / "chart.png", SAMPLES / "invoice.pdf", SAMPLES / "receipt.jpg",
                       "--model", tiny_model, "--max-new-tokens", "4")
    assert code == 0, err
    lines = [line for line in err.splitlines() if re.match(r"internvl: \[\d/3\]", line)]
    assert re.search(r"\[1/3\] done: \S*chart\.png \(1 page[;,)]", lines[0]), lines
    assert re.search(r"\[2/3\] done: \S*invoice\.pdf \(2 pages[;,)]", lines[1]), lines
    assert re.search(r"\[3/3\] done: \S*receipt\.jpg \(1 page[;,)]", lines[2]), lines
    assert "4 pages" in err.splitlines()[-1]


def test_progress_counts_a_voted_page_once(cli, tiny_model):
    _, _, err = cli("extract", SAMPLES / "chart.png", "--schema", "key_value", "--votes", "3",
                    "--model", tiny_model, "--max-new-tokens", "6")
    line = next(line for line in err.splitlines() if "[1/1]" in line)
    assert re.search(r"chart\.png \(1 page[;,)]", line), line


# -- 5. documents are checked before the weights load ---------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    files = awkward.make_all(folder)
    (folder / "letter.docx").write_bytes(b"PK\x03\x04 not really a word file")
    (folder / "fake.png").write_text("this is text, not a PNG")
    files["docx"], files["fake_png"] = folder / "letter.docx", folder / "fake.png"
    return files


@pytest.mark.parametrize("name,args,code", [
    ("invoice", ("--pages", "5"), ExitCode.INPUT_FILE),
    ("docx", (), ExitCode.INPUT_FILE),
    ("empty_png", (), ExitCode.INPUT_FILE),
    ("fake_png", (), ExitCode.INPUT_FILE),
    ("user_password_pdf", (), ExitCode.PASSWORD),
])
def test_unreadable_documents_fail_before_the_model_loads(cli, tiny_model, bad, name, args, code):
    path = SAMPLES / "invoice.pdf" if name == "invoice" else bad[name]
    exit_code, out, err = cli("ocr", path, *args, "--model", tiny_model)
    assert exit_code == code, err
    assert "loading model" not in err and out == ""
    assert err.count("internvl: error:") == 1


def test_checked_failures_are_recorded_and_the_rest_runs(cli, tiny_model, bad, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "chart.png", inbox / "chart.png")
    shutil.copy(bad["fake_png"], inbox / "fake.png")
    out = tmp_path / "out"
    code, _, err = cli("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4")
    assert code == ExitCode.PARTIAL and "fake.png" in err
    assert err.index("fake.png") < err.index("loading model")  # reported before the load
    _, status, _ = cli("status", out, "--json")
    summary = json.loads(status)
    assert summary["done"] == 1 and summary["failed"] == 1
    assert summary["failures"][0]["source"].endswith("fake.png")


def test_extract_checks_documents_before_the_model_loads(cli, tiny_model, bad):
    code, _, err = cli("extract", bad["docx"], "--schema", "invoice", "--model", tiny_model)
    assert code == ExitCode.INPUT_FILE and "loading model" not in err


# -- 6. inspect agrees with ocr on folders ----------------------------------------------------------------


def test_inspect_on_an_empty_folder_says_no_documents(cli, tmp_path):
    code, out, err = cli("inspect", tmp_path)
    assert code == ExitCode.BAD_ARGS and "no documents found" in err and out == ""


def test_inspect_notes_what_it_skips(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = cli("inspect", tmp_path)
    assert code == ExitCode.BAD_ARGS and "skipped" in err and "notes.txt" in err
    code, out, err = cli("inspect", SAMPLES, "--json")
    assert code == 0 and "skipped" in err and "make_samples.py" in err
    assert len(out.splitlines()) >= 4


# -- 7. every exit path is in the one table ---------------------------------------------------------------


def test_convert_of_a_missing_source_is_model_not_found(cli, tmp_path):
    code, _, err = cli("convert", tmp_path / "nonexistent", tmp_path / "dst")
    assert code == ExitCode.MODEL_NOT_FOUND and "nonexistent" in err


def test_convert_onto_an_existing_destination_names_overwrite(cli, tmp_path):
    from tiny_official import build_tiny_official

    src = build_tiny_official(tmp_path / "official")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    code, _, err = cli("convert", src, tmp_path / "dst")
    assert code == ExitCode.OUTPUT and "--overwrite" in err


def test_quantize_without_a_gpu_has_its_own_code(cli, tiny_model, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = cli("quantize", tiny_model, tmp_path / "q", "-c", SAMPLES / "chart.png")
    assert code == ExitCode.DEVICE and "GPU" in err


def test_missing_schema_file_is_described_by_its_code(cli):
    from internvl_cli.errors import EXIT_CODE_MEANINGS

    code, _, err = cli("extract", SAMPLES / "chart.png", "--schema", "/nonexistent.json", "--model", "/nonexistent")
    assert code == ExitCode.SCHEMA
    assert "found" in EXIT_CODE_MEANINGS[ExitCode.SCHEMA]


def test_help_lists_the_exit_codes_as_the_readme_does(cli):
    from internvl_cli.errors import EXIT_CODE_MEANINGS

    readme = (REPO / "README.md").read_text()
    table = {int(code): (name, meaning) for code, name, meaning in
             re.findall(r"^\| (\d+) \| ([A-Z_]+) \| (.+?) \|$", readme, flags=re.MULTILINE)}
    assert table == {int(code): (code.name, meaning) for code, meaning in EXIT_CODE_MEANINGS.items()}
    code, out, _ = cli("help", "exit-codes")
    assert code == 0
    for number, (name, _) in table.items():
        assert re.search(rf"^\s*{number}\s+{name}\b", out, flags=re.MULTILINE), name
    _, out, _ = cli("--help")
    assert "internvl help exit-codes" in out


# -- 8. status tells interrupted documents from failed ones ---------------------------------------------


def test_status_lists_interrupted_documents_as_interrupted(cli, tmp_path):
    from internvl_cli.errors import InputFileError
    from internvl_cli.runs.ledger import Ledger

    out = tmp_path / "out"
    with Ledger.open(out) as ledger:
        ledger.mark_running("c1", "t", source="in/killed.pdf", output_path=out / "killed.pdf.md", run_id="r")
        ledger.mark_running("c2", "t", source="in/bad.pdf", output_path=out / "bad.pdf.md", run_id="r")
        ledger.mark_failed("c2", "t", error=InputFileError("corrupt", path="in/bad.pdf"))
    code, stdout, _ = cli("status", out)
    assert code == 0
    assert "failed: 1" in stdout and "interrupted: 1" in stdout
    assert any(line.startswith("interrupted:") and "killed.pdf" in line for line in stdout.splitlines())
    assert not any(line.startswith("failed:") and "killed.pdf" in line for line in stdout.splitlines())
    with Ledger.open(out) as ledger:  # what a rerun does first: the killed row becomes an interrupted failure
        ledger.recover_interrupted()
    _, stdout, _ = cli("status", out)
    assert "failed: 1" in stdout and "interrupted: 1" in stdout
    assert not any(line.startswith("failed:") and "killed.pdf" in line for line in stdout.splitlines())


# -- 9. hints ---------------------------------------------------------------------------------------------


def test_not_found_hint_knows_hf_hub_offline_is_set_and_points_to_download(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", "internvl3-2b-awq")
    assert code == ExitCode.MODEL_NOT_FOUND
    assert "set HF_HUB_OFFLINE" not in err and "internvl download" in err


def test_misspelt_preset_gets_did_you_mean(cli):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", "internvl3-2b-awg")
    assert code == ExitCode.MODEL_NOT_FOUND and "did you mean internvl3-2b-awq" in err


def test_global_options_after_the_command(cli, tiny_model):
    code, out, err = cli("ocr", SAMPLES / "chart.png", "-q", "--model", tiny_model, "--max-new-tokens", "4")
    assert code == 0, err
    assert err == "" and out
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", "OpenGVLab/not-a-real-model", "--verbose")
    assert code == ExitCode.MODEL_NOT_FOUND and "Traceback" in err
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--password", "-q", "--model", tiny_model, "--max-new-tokens",
                       "4", "--format", "jsonl")
    assert code == 0 and "done" in err  # "-q" was the password's value, not the global option


# -- 10. records keep the path as given, and every field is documented ---------------------------------


def documented_fields(section: str) -> set[str]:
    readme = (REPO / "README.md").read_text()
    start = readme.index(section)
    block = readme[start:readme.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", block))


def test_records_keep_relative_paths(cli, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = cli("ocr", "samples/chart.png", "--format", "jsonl", "--model", tiny_model,
                         "--max-new-tokens", "4")
    assert code == 0, err
    assert json.loads(out)["file"] == "samples/chart.png"
    code, out, _ = cli("inspect", "samples/", "--json")
    assert {json.loads(line)["file"] for line in out.splitlines()} >= {"samples/chart.png", "samples/invoice.pdf"}
    code, _, err = cli("ocr", "samples/missing.png", "--model", tiny_model)
    assert "internvl: error: samples/missing.png:" in err


def test_every_record_field_is_documented(cli, tiny_model, monkeypatch):
    monkeypatch.chdir(REPO)
    _, out, _ = cli("ocr", "samples/chart.png", "--format", "jsonl", "--model", tiny_model, "--max-new-tokens", "4")
    assert set(json.loads(out)) <= documented_fields("OCR records")
    _, out, _ = cli("chart", "samples/chart.png", "--format", "json", "--model", tiny_model, "--max-new-tokens", "8")
    assert set(json.loads(out)) <= documented_fields("Chart records")
    _, out, _ = cli("extract", "samples/chart.png", "--schema", "key_value", "--model", tiny_model,
                    "--max-new-tokens", "8")
    record = json.loads(out)
    assert set(record) <= documented_fields("Extract records") and record["file"] == "samples/chart.png"
    assert {"vision", "vision+text-layer"} <= set(re.findall(r"`(vision(?:\+text-layer)?)`",
                                                             (REPO / "README.md").read_text()))


# -- 11. numeric options are range-checked -----------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("ocr", "--batch-size", "0"), ("ocr", "--batch-tiles", "0"), ("ocr", "--max-new-tokens", "0"),
    ("ocr", "--max-tiles", "41"), ("ocr", "--min-tiles", "0"), ("chart", "--batch-size", "-1"),
    ("extract", "--schema", "invoice", "--votes", "0"), ("inspect", "--max-tiles", "0"),
])
def test_numeric_options_out_of_range_are_usage_errors(cli, tiny_model, args):
    command, *rest = args
    model = () if command == "inspect" else ("--model", tiny_model)
    code, out, err = cli(command, SAMPLES / "chart.png", *rest, *model)
    assert code == ExitCode.BAD_ARGS and out == "" and "loading model" not in err


def test_batch_settings_refuse_bad_numbers_for_library_callers():
    from internvl_cli.errors import UsageError
    from internvl_cli.runs.batch import BatchSettings

    with pytest.raises(UsageError, match="batch_size"):
        BatchSettings(paths=["x.pdf"], batch_size=0)


# -- 12. flags take no value ---------------------------------------------------------------------------------


def test_help_shows_flags_without_a_value(cli):
    for command in ("ocr", "inspect", "status", "extract"):
        code, out, _ = cli(command, "--help")
        assert code == 0 and "<bool>" not in out, command


def test_a_flag_given_a_value_is_explained(cli, tmp_path):
    code, out, err = cli("inspect", SAMPLES / "chart.png", "--json", "true")
    assert code == ExitCode.BAD_ARGS and "--json" in err and "takes no value" in err and out == ""
    (tmp_path / "true").write_bytes((SAMPLES / "chart.png").read_bytes())  # a file really named true is fine
    code, out, _ = cli("inspect", SAMPLES / "chart.png", "--json", tmp_path / "true")
    assert code == 0 and len(out.splitlines()) == 2


# -- 13. models: the same presets as README, repository ids whole -------------------------------------------


def readme_presets() -> dict[str, tuple[str, str, str]]:
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (internvl[\w.-]+)(?: \(default\))? \| (\S+) \| ([\d.]+) GB \| (.+?) \|$", readme,
                      flags=re.MULTILINE)
    return {name: (repo, memory, licence) for name, repo, memory, licence in rows}


def test_models_and_readme_list_the_same_presets(cli):
    code, out, _ = cli("models", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert code == 0
    listed = {name: (r["repo_id"], f"{r['gpu_memory_gb']:g}", r["licence"]) for name, r in rows.items()}
    assert listed == readme_presets()
    assert "internvl2.5-8b-mpo-awq" not in rows  # InternLM2-based: the converter refuses it


def test_models_table_keeps_repository_ids_whole_at_120_columns():
    import pty

    from internvl_cli.models.presets import PRESETS

    leader, follower = pty.openpty()
    proc = subprocess.Popen(internvl("models"), stdin=follower, stdout=follower, stderr=follower,
                            env=env(COLUMNS="120", LINES="50", TERM="xterm"))
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert proc.returncode == 0, text
    assert max(len(line) for line in text.splitlines()) <= 120
    for preset in PRESETS.values():
        assert preset.repo_id in text, preset.repo_id


# -- 14. binary data on stdin is not a path list -----------------------------------------------------------


def test_an_image_piped_to_stdin_is_explained_once(tiny_model):
    done = subprocess.run(internvl("ocr", "-", "--model", tiny_model), input=(SAMPLES / "chart.png").read_bytes(),
                          capture_output=True, env=env(), timeout=300)
    err = done.stderr.decode()
    assert done.returncode == ExitCode.BAD_ARGS
    assert len(err.strip().splitlines()) == 1 and "PNG" in err and "paths" in err
    assert "loading model" not in err


# -- 15. duplicates are noted ---------------------------------------------------------------------------------


def test_links_to_one_file_are_noted_as_duplicates(cli, tmp_path):
    folder = tmp_path / "links"
    folder.mkdir()
    shutil.copy(SAMPLES / "chart.png", folder / "a.png")
    for i in range(3):
        (folder / f"link{i}.png").symlink_to(folder / "a.png")
    code, out, err = cli("inspect", folder, "--json")
    assert code == 0 and len(out.splitlines()) == 1
    assert "3 duplicates" in err and "a.png" in err


# -- 16. an interrupted run says so ------------------------------------------------------------------------------


def test_interrupted_run_says_so_and_counts_the_model_load(tiny_model, tmp_path):
    inbox = make_inbox(tmp_path / "inbox", 16)
    out = tmp_path / "out"
    args = internvl("ocr", inbox, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--batch-size", "1")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "[1/16]" in line:
            proc.send_signal(signal.SIGTERM)
            break
    seen.extend(proc.stderr)
    assert proc.wait(timeout=300) == ExitCode.TERMINATED
    last = seen[-1]
    assert "interrupted" in last and "rerun" in last, seen
    load = float(re.search(r"model ready in ([\d.]+) s", "".join(seen)).group(1))
    total = float(re.search(r"in ([\d.]+) s", last).group(1))
    assert total >= load


# -- 17. JSON for machines ------------------------------------------------------------------------------------


def test_doctor_json_keys_are_identifiers(cli):
    code, out, _ = cli("doctor", "--json")
    report = json.loads(out)
    assert code == 0 and all(re.fullmatch(r"[a-z0-9_]+", key) for key in report), list(report)
    assert "config_file" in report


def test_status_json_rounds_seconds(cli, tmp_path):
    from internvl_cli.runs.ledger import Ledger

    out = tmp_path / "out"
    with Ledger.open(out) as ledger:
        for i, seconds in enumerate((0.1, 0.2)):  # a float sum: 0.30000000000000004
            target = out / f"d{i}.md"
            ledger.mark_running(f"c{i}", "t", source=f"d{i}.png", output_path=target, run_id="r")
            target.write_text("x")
            ledger.mark_done(f"c{i}", "t", output_path=target, pages=1, seconds=seconds)
    code, stdout, _ = cli("status", out, "--json")
    assert code == 0 and '"seconds": 0.3,' in stdout


# -- conventions ------------------------------------------------------------------------------------------------


def test_dash_h_is_help_everywhere(cli):
    for args in ((), ("ocr",), ("status",), ("config",), ("config", "set")):
        code, out, _ = cli(*args, "-h")
        assert code == 0 and "Usage:" in out, args


def test_every_command_help_has_examples(cli):
    from typer.main import get_command

    from internvl_cli.cli import app

    group = get_command(app)
    for name, command in group.commands.items():
        code, out, _ = cli(name, "--help")
        assert code == 0 and "Examples:" in out and f"internvl {name}" in out, name


def test_document_command_help_heads_each_option_group(cli):
    """Option groups are declared once (cli/groups.py); each document command's help shows them as sections."""
    for command, absent in (("ocr", ()), ("chart", ("--anchored-prompt",)), ("extract", ("--min-tiles",))):
        code, out, _ = cli(command, "--help")
        heads = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
        assert heads == ["Arguments:", "Options:", "Model and engine:", "Pages and tiles:",
                         "Inputs, output and batches:", "Prompt:", "Loop detection:"], command
        sections = {head: section for head, section in zip(heads, out.split("\n\n")[-len(heads):])}
        assert "--server" in sections["Model and engine:"] and "--max-tiles" in sections["Pages and tiles:"]
        assert "--retry-failed" in sections["Inputs, output and batches:"] and "--no-system" in sections["Prompt:"]
        assert "--loop-lines" in sections["Loop detection:"] and "--max-new-tokens" in sections["Options:"]
        assert not [flag for flag in absent if flag in out], command


def test_shell_completion_is_offered(cli):
    code, out, _ = cli("--help")
    assert "--install-completion" in out and "--show-completion" in out
    code, out, _ = cli("--show-completion", "bash")
    assert code == 0 and "complete" in out and "_INTERNVL_COMPLETE" in out


@pytest.fixture()
def config_home(tmp_path, monkeypatch):
    path = tmp_path / "config" / "config.json"
    monkeypatch.setenv("INTERNVL_CLI_CONFIG", str(path))
    monkeypatch.delenv("INTERNVL_MODEL", raising=False)
    return path


def test_config_set_get_list_and_precedence(cli, tiny_model, config_home, monkeypatch):
    assert cli("config", "set", "model", tiny_model)[0] == 0
    assert cli("config", "set", "max-tiles", "4")[0] == 0
    assert cli("config", "set", "ocr.format", "jsonl")[0] == 0
    code, out, _ = cli("config", "get", "max-tiles")
    assert code == 0 and out.strip() == "4"
    code, out, _ = cli("config", "list")
    assert f"model = {tiny_model}" in out and "max-tiles = 4" in out and "ocr.format = jsonl" in out
    assert json.loads(config_home.read_text())["max-tiles"] == 4
    # the config gives the defaults ...
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--max-new-tokens", "4")
    assert code == 0, err
    assert json.loads(out)["tiles"] == 3 and str(tiny_model) in err  # 4 tiles at most: a 2x1 grid + thumbnail
    code, out, _ = cli("inspect", SAMPLES / "chart.png", "--json")
    assert json.loads(out)["tiles"] == 3  # every command with --max-tiles takes it
    # ... an environment variable wins over it, a flag over both
    monkeypatch.setenv("INTERNVL_MODEL", "/nonexistent-from-env")
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--max-new-tokens", "4")
    assert code == ExitCode.MODEL_NOT_FOUND and "nonexistent-from-env" in err
    code, out, _ = cli("ocr", SAMPLES / "chart.png", "--max-new-tokens", "4", "--model", tiny_model,
                       "--max-tiles", "12")
    assert code == 0 and json.loads(out)["tiles"] == 7
    code, _, _ = cli("config", "unset", "max-tiles")
    assert code == 0 and "max-tiles" not in json.loads(config_home.read_text())


def test_config_refuses_unknown_keys_and_bad_values(cli, config_home):
    code, _, err = cli("config", "set", "colour", "blue")
    assert code == ExitCode.BAD_ARGS and "colour" in err
    code, _, err = cli("config", "set", "max-tiles", "lots")
    assert code == ExitCode.BAD_ARGS and "max-tiles" in err
    code, _, err = cli("config", "set", "password", "secret")
    assert code == ExitCode.BAD_ARGS
    assert not config_home.exists()


def test_a_broken_config_file_is_one_clear_error(cli, config_home):
    config_home.parent.mkdir(parents=True)
    config_home.write_text("{not json")
    code, _, err = cli("inspect", SAMPLES / "chart.png")
    assert code == ExitCode.BAD_ARGS and str(config_home) in err and "Traceback" not in err


def test_doctor_shows_the_config_path(cli, config_home):
    code, out, _ = cli("doctor")
    assert code == 0 and str(config_home) in out


def hub_cache_with(repo_id: str, checkpoint: Path, cache: Path) -> None:
    """The Hugging Face cache layout (models--org--name/snapshots/REV, refs/main) holding `checkpoint`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def test_download_fetches_and_converts_a_preset_ahead_of_time(tmp_path):
    from tiny_official import build_tiny_official

    # The hub's client reads its cache location once per process: a subprocess, as a user's shell would run it.
    cache = tmp_path / "hub"
    hub_cache_with("OpenGVLab/InternVL3-2B-AWQ", build_tiny_official(tmp_path / "official", awq=True), cache)
    where = env(HF_HUB_CACHE=str(cache), INTERNVL_CLI_CACHE=str(tmp_path / "converted"))
    done = subprocess.run(internvl("download", "internvl3-2b-awq"), capture_output=True, text=True, env=where,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    native = Path(done.stdout.strip())
    assert json.loads((native / "config.json").read_text())["model_type"] == "internvl"
    assert "converting" in done.stderr and native.is_relative_to(tmp_path / "converted")
    again = subprocess.run(internvl("download", "internvl3-2b-awq"), capture_output=True, text=True, env=where,
                           timeout=300)
    assert again.returncode == 0 and again.stdout == done.stdout and "converting" not in again.stderr
    ocr = subprocess.run(internvl("ocr", SAMPLES / "chart.png", "--model", "internvl3-2b-awq", "--max-new-tokens",
                                  "4", "--format", "jsonl"), capture_output=True, text=True, env=where, timeout=300)
    assert ocr.returncode == 0, ocr.stderr
    assert json.loads(ocr.stdout)["model"] == "OpenGVLab/InternVL3-2B-AWQ"


def test_download_of_a_missing_preset_offline(tmp_path):
    done = subprocess.run(internvl("download", "internvl3-1b-awq"), capture_output=True, text=True,
                          env=env(HF_HUB_CACHE=str(tmp_path / "hub")), timeout=300)
    assert done.returncode == ExitCode.MODEL_NOT_FOUND and done.stdout == ""
    assert "HF_HUB_OFFLINE" in done.stderr and "set HF_HUB_OFFLINE=1" not in done.stderr


def test_download_of_a_local_directory_converts_it(cli, tmp_path, monkeypatch):
    from tiny_official import build_tiny_official

    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "converted"))
    src = build_tiny_official(tmp_path / "official")
    code, out, err = cli("download", src)
    assert code == 0, err
    assert Path(out.strip()).is_relative_to(tmp_path / "converted")
