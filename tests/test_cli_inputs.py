"""The inputs people actually have (issue 13), driven through the CLI with a real tiny model: records and flags,
or the documented one-line error and exit code."""
from __future__ import annotations

import json
import unicodedata

import pytest

import awkward
from internvl_cli.errors import ExitCode

FAST = ("--max-new-tokens", "2", "--max-tiles", "2")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return awkward.make_all(tmp_path_factory.mktemp("inputs"))


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("internvl: error:")]


def test_phone_photos_posters_and_cut_images_are_read_and_flagged(cli, tiny_model, files):
    names = ["heic_photo", "avif_photo", "poster_pdf", "truncated_jpeg", "truncated_png"]
    code, out, err = cli("ocr", *[files[n] for n in names], "--model", tiny_model, "--format", "jsonl", *FAST)
    assert code == 0, err
    got = {r["file"].rsplit("/", 1)[-1]: r for r in records(out)}
    assert set(got) == {files[n].name for n in names}
    assert all("error" not in r and r["tiles"] >= 1 for r in got.values())
    assert "truncated-image" not in got["exif-rotate-6.heic"]["flags"]
    assert "oversized-page" in got["poster.pdf"]["flags"]
    assert "truncated-image" in got["cut-80.jpg"]["flags"] and "truncated-image" in got["cut-75.png"]["flags"]


def test_inspect_shows_upright_sizes_and_flags(cli, files):
    names = ["heic_photo", "avif_photo", "poster_pdf", "truncated_jpeg"]
    code, out, err = cli("inspect", *[files[n] for n in names], "--json")
    assert code == 0, err
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in records(out)}
    assert (rows["exif-rotate-6.heic"]["width"], rows["exif-rotate-6.heic"]["height"]) == (200, 300)
    assert (rows["exif-rotate-6.avif"]["width"], rows["exif-rotate-6.avif"]["height"]) == (200, 300)
    assert rows["poster.pdf"]["flags"] == ["oversized-page"] and rows["poster.pdf"]["grid"] == [2, 4]
    assert rows["cut-80.jpg"]["flags"] == ["truncated-image"] and rows["cut-80.jpg"]["height"] == 640


def test_what_would_exhaust_memory_or_is_mostly_missing_is_refused(cli, tiny_model, files):
    names = ["image_bomb_pdf", "truncated_jpeg_short", "truncated_png_short"]
    code, out, err = cli("ocr", *[files[n] for n in names], "--model", tiny_model, "--format", "jsonl", *FAST)
    assert code == ExitCode.INPUT_FILE and "Traceback" not in err
    lines = errors(err)
    assert len(lines) == 3
    bomb, jpeg, png = (next(line for line in lines if files[n].name in line) for n in names)
    assert "page 1 embeds a 40000x40000 image" in bomb and "1,000-megapixel limit" in bomb
    assert "cut short: only 144 of its 800 rows (18%) are present, fewer than the 50% needed" in jpeg
    assert "only 201 of its 800 rows (25%)" in png


def test_one_broken_page_object_keeps_the_other_pages(cli, tiny_model, files):
    code, out, err = cli("ocr", files["broken_page_pdf"], files["page_tree_cycle_pdf"], "--model", tiny_model,
                         "--format", "jsonl", "--max-new-tokens", "1", "--max-tiles", "1")
    assert code == 0, err
    for name, reason in (("broken-page.pdf", "damaged"), ("page-tree-cycle.pdf", "cycle in the page tree")):
        pages = [r for r in records(out) if r["file"].endswith(name)]
        assert [r["page"] for r in pages] == list(range(1, 13)) and {r["pages"] for r in pages} == {12}
        skipped = pages[1]
        assert skipped["flags"] == ["broken-page", "failed"] and reason in skipped["error"]
        assert all("error" not in r and r["flags"] == ["repaired-pdf", "truncated"] for r in pages[:1] + pages[2:])


def test_a_broken_page_in_a_short_document_fails_it_under_the_page_error_rule(cli, tiny_model, files):
    code, out, err = cli("ocr", files["broken_page_pdf"], "--pages", "1-3", "--model", tiny_model,
                         "--format", "jsonl", "--max-new-tokens", "1", "--max-tiles", "1")
    assert code == ExitCode.INPUT_FILE and out == ""
    assert "page 2 skipped: its page object 6 0 R is damaged" in errors(err)[0]


@pytest.mark.parametrize("typed", [
    unicodedata.normalize("NFD", awkward.UNICODE_PASSWORD),  # decomposed, as macOS input can give
    "p\u00e4ss\u00adw\u00f6rd",                              # with a soft hyphen
])
def test_aes_256_password_typed_differently_still_opens(cli, tiny_model, files, typed):
    code, out, err = cli("ocr", files["unicode_password_pdf"], "--password", typed, "--pages", "1",
                         "--model", tiny_model, "--format", "jsonl", *FAST)
    assert code == 0, err
    assert [r["page"] for r in records(out)] == [1]


def test_unprepared_and_wrong_passwords(cli, tiny_model, files):
    code, _, err = cli("inspect", files["unprepared_password_pdf"], "--password", awkward.UNPREPARED_PASSWORD,
                       "--json")
    assert code == 0, err
    code, out, err = cli("ocr", files["unicode_password_pdf"], "--password", "passwort", "--model", tiny_model)
    assert code == ExitCode.PASSWORD and "wrong password" in errors(err)[0] and out == ""


def test_frames_option(cli, tiny_model, files):
    def pages_of(*args):
        code, out, err = cli("inspect", *args, "--json")
        assert code == 0, err
        return [(r["file"].rsplit("/", 1)[-1], r["page"], r["pages"]) for r in records(out)]

    assert pages_of(files["animated_gif"], files["animated_webp"]) == [("animated.gif", 1, 1), ("animated.webp", 1, 1)]
    assert pages_of(files["animated_gif"], "--frames", "all") == [("animated.gif", n, 3) for n in (1, 2, 3)]
    assert pages_of(files["multiframe_tiff"], "--frames", "first") == [("multipage.tiff", 1, 1)]
    code, out, err = cli("ocr", files["animated_webp"], "--frames", "all", "--model", tiny_model,
                         "--format", "jsonl", *FAST)
    assert code == 0, err
    assert [(r["page"], r["pages"]) for r in records(out)] == [(1, 3), (2, 3), (3, 3)]
    code, _, err = cli("ocr", files["animated_gif"], "--frames", "every", "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and "--frames must be one of all, first" in err
