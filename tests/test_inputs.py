"""Unit tests of input discovery: folders, globs, stdin lists, filters, notes, errors and de-duplication."""
from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import pytest

from internvl_cli.documents import inputs
from internvl_cli.errors import ExitCode
from internvl_cli.documents.inputs import Discovery, discover, glob_regex, read_path_list
from internvl_cli.runs.outputs import STATE_DIR_NAME

TREE = [
    "in/a/invoice.pdf",
    "in/b/invoice.pdf",
    "in/b/deep/scan.PNG",
    "in/b/deep/photo.jpeg",
    "in/top.tiff",
    "in/notes.txt",
    "in/drafts/d.pdf",
    "in/.hidden/x.pdf",
    "in/._top.pdf",
    "in/out/previous.pdf",          # the output folder of this run
    "in/old-run/result.pdf",        # another internvl output folder
    f"in/old-run/{STATE_DIR_NAME}/ledger.sqlite3",
]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"%PDF-1.4 " + name.encode())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rels(found: Discovery) -> list[str]:
    return [d.relative.as_posix() for d in found.docs]


def reasons(found: Discovery) -> dict[str, str]:
    return {p.path.name: p.reason for p in found.skipped}


def test_folder_is_walked_sorted_with_notes(tree: Path) -> None:
    found = discover(["in"], out_dir="in/out")
    assert rels(found) == ["a/invoice.pdf", "b/deep/photo.jpeg", "b/deep/scan.PNG", "b/invoice.pdf",
                           "drafts/d.pdf", "top.tiff"]
    doc = found.docs[0]
    assert doc.path == Path("in/a/invoice.pdf") and doc.root == tree / "in"  # the path as given; the root absolute
    notes = reasons(found)
    assert "unsupported" in notes["notes.txt"] and ".txt" in notes["notes.txt"]
    assert notes["out"] == "the output folder"
    assert notes["old-run"] == "an internvl output folder"
    assert not any(n.startswith(".") for n in notes)  # hidden entries are skipped silently
    assert found.errors == []


def test_same_discovery_twice_is_identical(tree: Path) -> None:
    assert discover(["in"]).docs == discover(["in"]).docs


def test_include_and_exclude_match_relative_path_and_basename(tree: Path) -> None:
    found = discover(["in"], include=["*.pdf"], exclude=["drafts", "b/**"], out_dir="in/out")
    assert rels(found) == ["a/invoice.pdf"]
    assert reasons(found)["drafts"] == "excluded by --exclude 'drafts'"
    assert "notes.txt" not in reasons(found)  # filtered out on purpose: no note per file
    assert rels(discover(["in"], include=["b/**/*.png"])) == ["b/deep/scan.PNG"]  # case-insensitive


def test_explicit_files_always_returned_and_filters_apply(tree: Path) -> None:
    found = discover(["in/notes.txt", "in/top.tiff"], exclude=["top.*"])
    assert rels(found) == ["notes.txt"]  # the loader reports the unsupported type precisely
    assert reasons(found)["top.tiff"] == "excluded by --exclude 'top.*'"


def test_missing_paths_are_errors_and_the_rest_is_kept(tree: Path) -> None:
    found = discover(["nope.pdf", "in/a/invoice.pdf", "in/zz*.pdf"])
    assert rels(found) == ["invoice.pdf"]
    assert [(e.path, e.message) for e in found.errors] == [
        ("nope.pdf", "file not found"), ("in/zz*.pdf", "no file matches this pattern")]
    assert all(e.exit_code == ExitCode.INPUT_FILE for e in found.errors)


def test_glob_is_relative_to_its_non_glob_prefix(tree: Path) -> None:
    assert rels(discover(["in/**/*.pdf"])) == [
        "a/invoice.pdf", "b/invoice.pdf", "drafts/d.pdf", "out/previous.pdf"]  # old-run holds .internvl
    assert rels(discover(["in/*/invoice.pdf"])) == ["a/invoice.pdf", "b/invoice.pdf"]
    found = discover([str(tree / "in/b/**")])
    assert rels(found) == ["deep/photo.jpeg", "deep/scan.PNG", "invoice.pdf"]
    assert found.docs[0].root == tree / "in/b"


def test_glob_without_prefix_and_literal_name_with_glob_chars(tree: Path) -> None:
    (tree / "[draft].pdf").write_bytes(b"x")
    assert rels(discover(["[draft].pdf"])) == ["[draft].pdf"]
    assert rels(discover(["*.pdf"])) == ["[draft].pdf"]


def test_glob_matching_only_unsupported_files_is_not_an_error(tree: Path) -> None:
    found = discover(["in/*.txt"])
    assert found.docs == [] and found.errors == [] and "notes.txt" in reasons(found)


def test_duplicates_are_dropped_by_real_path(tree: Path) -> None:
    os.symlink(tree / "in/top.tiff", tree / "link.tiff")
    found = discover(["in/top.tiff", "in", "./in/top.tiff", "link.tiff"])
    assert rels(found).count("top.tiff") == 1
    assert len(found.docs) == len({os.path.realpath(d.path) for d in found.docs})
    assert [(str(a), str(b)) for a, b in found.duplicates] == [
        ("in/top.tiff", "in/top.tiff"), ("in/top.tiff", "in/top.tiff"), ("link.tiff", "in/top.tiff")]


def test_output_name_clash_between_arguments_is_an_error(tree: Path) -> None:
    found = discover(["in/a/invoice.pdf", "in/b/invoice.pdf"])
    assert [d.path for d in found.docs] == [Path("in/a/invoice.pdf")]
    (error,) = found.errors
    assert error.path == "in/b/invoice.pdf" and "same output" in error.message


def test_links_and_special_files(tree: Path) -> None:
    os.symlink(tree / "in/a", tree / "in/linked-dir")
    os.symlink(tree / "missing.pdf", tree / "in/broken.pdf")
    os.mkfifo(tree / "fifo.pdf")
    found = discover(["in", "fifo.pdf", "in/broken.pdf"])
    assert "linked-dir/invoice.pdf" not in rels(found)
    notes = reasons(found)
    assert "not followed" in notes["linked-dir"] and notes["broken.pdf"] == "broken symbolic link"
    messages = [e.message for e in found.errors]
    assert any("not a regular file" in m for m in messages) and any("broken" in m for m in messages)


def test_unreadable_folder_is_an_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: str):  # chmod 0 would not stop root, so simulate the permission error
        if path.endswith(os.sep + "b"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    found = discover(["in"])
    assert "b/invoice.pdf" not in rels(found)
    assert any("cannot read folder" in e.message for e in found.errors)


def test_stdin_lines_keep_the_listed_path(tree: Path) -> None:
    listing = f"./in/a/invoice.pdf\n\n   \nin/b/invoice.pdf\r\n{tree}/in/top.tiff\nin/drafts\nmissing.pdf\n"
    found = discover(["-"], stdin=io.StringIO(listing))
    assert rels(found) == ["in/a/invoice.pdf", "in/b/invoice.pdf", f"{str(tree)[1:]}/in/top.tiff", "d.pdf"]
    assert found.docs[0].root == tree and found.docs[2].root == Path("/")
    assert found.docs[3].root == tree / "in/drafts"  # a listed folder is walked like a folder argument
    assert [e.path for e in found.errors] == ["missing.pdf"]


def test_stdin_nul_separated_from_find_print0(tree: Path) -> None:
    (tree / "in/a/with\nnewline.pdf").write_bytes(b"x")
    raw = b"in/a/invoice.pdf\0in/a/with\nnewline.pdf\0"
    found = discover(["-"], stdin=io.TextIOWrapper(io.BytesIO(raw)))
    assert rels(found) == ["in/a/invoice.pdf", "in/a/with\nnewline.pdf"]


def test_stdin_parent_relative_entries_drop_leading_dotdot(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "in/a")
    found = discover(["-"], stdin=io.StringIO("../b/invoice.pdf\n"))
    assert rels(found) == ["b/invoice.pdf"] and found.docs[0].root == tree / "in"


def test_stdin_is_read_once_and_keeps_undecodable_names() -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"caf\xe9.pdf\nok.pdf\n"))
    assert read_path_list(stream) == ["caf\udce9.pdf", "ok.pdf"]
    assert read_path_list(stream) == []


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    ("**/*.pdf", "x.pdf", True),
    ("**/*.pdf", "a/b/x.pdf", True),
    ("*.pdf", "a/x.pdf", False),
    ("a/*", "a/b/x.pdf", False),
    ("a/**", "a/b/x.pdf", True),
    ("scan-[0-9].PDF", "scan-7.pdf", True),
    ("scan-[!0-9].pdf", "scan-x.pdf", True),
    ("scan-[!0-9].pdf", "scan-1.pdf", False),
    ("?.pdf", "/.pdf", False),
    ("[[]x].pdf", "[x].pdf", True),
    ("a+b(1).pdf", "a+b(1).pdf", True),
])
def test_glob_regex(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is hit


def test_relative_is_pure_posix(tree: Path) -> None:
    assert all(isinstance(d.relative, PurePosixPath) for d in discover(["in"]).docs)
