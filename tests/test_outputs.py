"""Unit tests of the output step: mirrored names that never escape OUTDIR, atomic writes, stale temp cleanup."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from internvl_cli.runs import outputs
from internvl_cli.errors import InputFileError
from internvl_cli.runs.outputs import (
    NAME_MAX,
    STATE_DIR_NAME,
    atomic_write_bytes,
    atomic_write_text,
    cleanup_stale_temps,
    is_temp_name,
    output_path,
)

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a/../../b.pdf",
    "//server/share/x.pdf",
    "C:\\Windows\\system32\\x.pdf",
    "C:/x.pdf",
    "a\x00b.pdf",
    "line\nbreak.pdf",
    "tab\tand\rcr.pdf",
    "x" * 1000 + ".pdf",
    "é" * 300 + ".pdf",
    "deep/" + "d" * 300 + "/x.pdf",
    f"{STATE_DIR_NAME}/ledger.sqlite3",
    f"{STATE_DIR_NAME.upper()}/run.lock",
    "bad\udcffbytes.pdf",
]


def test_mirrors_relative_path_and_keeps_extension(tmp_path: Path) -> None:
    assert output_path(tmp_path, PurePosixPath("a/invoice.pdf"), ".md") == tmp_path / "a" / "invoice.pdf.md"
    assert output_path(tmp_path, "invoice.pdf", ".json") == tmp_path / "invoice.pdf.json"


def test_same_name_in_different_folders_or_types_never_collides(tmp_path: Path) -> None:
    names = ["a/invoice.pdf", "b/invoice.pdf", "a/invoice.png", "invoice.pdf"]
    assert len({output_path(tmp_path, n, ".md") for n in names}) == len(names)


def test_hidden_file_and_state_dir_name_as_a_file_are_kept(tmp_path: Path) -> None:
    # Only a *folder* named .internvl at the top would reach into our state; a file of that name is harmless.
    assert output_path(tmp_path, ".scan.pdf", ".md") == tmp_path / ".scan.pdf.md"
    assert output_path(tmp_path, STATE_DIR_NAME, ".md") == tmp_path / f"{STATE_DIR_NAME}.md"


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside_out_dir_and_are_writable(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    path = output_path(out, name, ".md")
    rel = path.relative_to(out)  # raises if outside
    assert ".." not in rel.parts and rel.parts[0].casefold() != STATE_DIR_NAME
    for part in rel.parts:
        assert len(part.encode("utf-8")) <= NAME_MAX
        assert not any(ord(c) < 32 or c == "\\" or 0xD800 <= ord(c) <= 0xDFFF for c in part)
    assert path.name.endswith(".md")
    atomic_write_text(path, "ok")  # the file system accepts it, temp name included
    assert path.read_text() == "ok"
    assert os.path.realpath(path).startswith(os.path.realpath(out) + os.sep)


def test_sanitised_names_stay_distinct_and_stable(tmp_path: Path) -> None:
    variants = ["a\nb.pdf", "a\rb.pdf", "a_b.pdf", "a\\b.pdf", "x" * 600, "x" * 601]
    paths = [output_path(tmp_path, v, ".md") for v in variants]
    assert len(set(paths)) == len(variants)
    assert paths == [output_path(tmp_path, v, ".md") for v in variants]
    assert paths[2] == tmp_path / "a_b.pdf.md"  # a clean name is never rewritten


def test_long_name_leaves_room_for_suffix_and_temp(tmp_path: Path) -> None:
    path = output_path(tmp_path, "n" * 255, ".json")
    assert len(path.name.encode()) + len(".") + len(".tmp-") + 8 <= NAME_MAX
    atomic_write_bytes(path, b"{}")
    assert path.read_bytes() == b"{}"


@pytest.mark.parametrize("suffix", ["md", "", ".", "./x", "/md", ".m\nd"])
def test_bad_suffix_is_a_programming_error(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError):
        output_path(tmp_path, "x.pdf", suffix)


@pytest.mark.parametrize("relative", ["", ".", "/"])
def test_empty_relative_is_a_programming_error(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValueError):
        output_path(tmp_path, relative, ".md")


def test_too_long_total_path_is_an_input_error(tmp_path: Path) -> None:
    deep = "/".join(["d" * 200] * 25) + "/x.pdf"
    with pytest.raises(InputFileError) as info:
        output_path(tmp_path, deep, ".md")
    assert info.value.exit_code == 3


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.pdf.md"
    atomic_write_text(target, "héllo\n")
    atomic_write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert _entries(target.parent) == ["x.pdf.md"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_write_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fail_at: str) -> None:
    target = tmp_path / "x.md"
    atomic_write_text(target, "old")

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, fail_at, boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new " * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["x.md"]


def test_interrupt_during_write_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "x.md", b"data")
    assert _entries(tmp_path) == []


def test_cleanup_removes_only_our_stale_temps(tmp_path: Path) -> None:
    keep = ["x.pdf.md", ".hidden.md", ".x.md.tmp-zzzzzzzz", "x.md.tmp-0123abcd", ".x.md.tmp-0123abc"]
    stale = [".x.pdf.md.tmp-0123abcd", "sub/deep/.y.json.tmp-deadbeef"]
    for name in keep + stale + [f"{STATE_DIR_NAME}/.ledger.tmp-0123abcd"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = cleanup_stale_temps(tmp_path)
    assert sorted(removed) == sorted(tmp_path / s for s in stale)
    assert all((tmp_path / k).exists() for k in keep)
    assert (tmp_path / STATE_DIR_NAME / ".ledger.tmp-0123abcd").exists()


def test_temp_names_are_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", spy)
    atomic_write_text(tmp_path / "x.md", "x")
    assert len(seen) == 1 and seen[0].startswith(".x.md.tmp-") and is_temp_name(seen[0])
