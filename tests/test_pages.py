"""The page loader on awkward real files: every one either loads correctly or fails with a typed, clear error."""
from __future__ import annotations

import numpy as np
import pytest

import awkward
from internvl_cli.errors import ExitCode, InputFileError, PasswordError, UsageError
from internvl_cli.documents.pages import open_pages, parse_page_ranges
from internvl_cli.documents.tiling import TilingConfig, tile_page


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return awkward.make_all(tmp_path_factory.mktemp("awkward"))


def pages(path, **kwargs):
    return list(open_pages(path, **kwargs))


@pytest.mark.parametrize("name,count", [
    ("cmyk_jpeg", 1), ("progressive_jpeg", 1), ("multiframe_tiff", 3), ("webp", 1), ("bmp", 1), ("gif", 1),
    ("palette_png_transparent", 1), ("rgba_png", 1), ("gray16_png", 1), ("tiny_png", 1), ("extreme_aspect", 1),
    ("owner_password_pdf", None), ("mixed_text_layer_pdf", 3), ("rotated_page_pdf", 1), ("huge_page_pdf", 1),
])
def test_loadable_files_render_to_rgb_tiles(files, name, count):
    seen = 0
    for page in open_pages(files[name]):  # pages render while their document is open, as the runner does
        plan, tiles = tile_page(page, TilingConfig())
        assert tiles.shape == (plan.tiles, 3, 448, 448) and np.isfinite(tiles).all()
        seen += 1
    assert seen == count if count is not None else seen >= 1


def test_a_checked_document_stays_open_for_its_units_while_memory_allows(files):
    """A run's check opens each document before the model loads; its units then use that open document, as long
    as the kept ones fit (a count, and the bytes of decoded image pages); the others are opened again."""
    from internvl_cli.documents.kept import KeptDocuments

    opened = []

    def opener(path):
        opened.append(path.name)
        return open_pages(path)

    pdf, tiff, webp = files["mixed_text_layer_pdf"], files["multiframe_tiff"], files["webp"]
    kept = KeptDocuments(opener, max_documents=2, max_bytes=600 * 400 * 3)
    for path in (pdf, tiff, webp):  # the PDF holds no raster; the TIFF's first frame fills the bytes
        kept.check(path)
    assert [p.number for p in kept.pages(pdf)] == [1, 2, 3] and [p.number for p in kept.pages(tiff)] == [1, 2, 3]
    assert [p.number for p in kept.pages(webp)] == [1] and [p.number for p in kept.pages(pdf)] == [1, 2, 3]
    assert opened == [pdf.name, tiff.name, webp.name, webp.name, pdf.name]  # kept once; beyond the budget, again


def test_tiff_frames_are_pages_with_their_own_sizes(files):
    sizes = [(p.width, p.height) for p in pages(files["multiframe_tiff"])]
    assert sizes == [(600, 400), (400, 600), (300, 300)]


def test_exif_orientation_is_applied(files):
    page = pages(files["exif_rotated_jpeg"])[0]
    image = np.asarray(page.native_image())
    assert (page.width, page.height) == (200, 300)
    top, left = image[:20, 80:120].mean(axis=(0, 1)), image[140:160, :20].mean(axis=(0, 1))
    assert top[0] > 150 and top[1] < 80  # the red block ends up at the top
    assert left[1] > 150  # and no longer on the left


def test_transparency_becomes_white_paper_and_text_stays_dark(files):
    for name in ("palette_png_transparent", "rgba_png"):
        image = np.asarray(pages(files[name])[0].native_image())
        assert image[0, 0].tolist() == [255, 255, 255]
        assert image.min() < 100


def test_16_bit_greyscale_is_scaled_not_clipped(files):
    image = np.asarray(pages(files["gray16_png"])[0].native_image())
    assert image.min() < 50 and image.max() > 200  # text 4000/65535 stays dark, background 60000 light


def test_text_layer_detected_per_page(files):
    assert [p.text_layer is not None for p in pages(files["mixed_text_layer_pdf"])] == [True, False, True]


def test_rotated_page_is_landscape(files):
    page = pages(files["rotated_page_pdf"])[0]
    assert page.width > page.height


@pytest.mark.parametrize("name,error,fragment", [
    ("truncated_pdf", InputFileError, "corrupt"),
    ("random_bytes_pdf", InputFileError, "not a PDF"),
    ("text_as_pdf", InputFileError, "not a PDF"),
    ("zero_page_pdf", InputFileError, "no pages"),
    ("empty_png", InputFileError, "empty"),
    ("decompression_bomb", InputFileError, "megapixel"),
    ("non_document", InputFileError, "not a supported"),
    ("user_password_pdf", PasswordError, "needs a password"),
])
def test_bad_files_raise_typed_one_line_errors(files, name, error, fragment):
    with pytest.raises(error) as caught:
        pages(files[name])
    line = caught.value.one_line()
    assert fragment in line and str(files[name]) in line and "\n" not in line


def test_passwords(files):
    assert len(pages(files["user_password_pdf"], password="secret")) == 3
    with pytest.raises(PasswordError) as caught:
        pages(files["user_password_pdf"], password="wrong")
    assert caught.value.exit_code == ExitCode.PASSWORD and "wrong password" in caught.value.message


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="file not found"):
        pages(tmp_path / "nope.pdf")


def test_page_ranges():
    select = parse_page_ranges("1-3,7,10-")
    assert select(12) == [0, 1, 2, 6, 9, 10, 11]
    assert select(2) == [0, 1]
    for bad in ("0", "3-1", "a", "1-x"):
        with pytest.raises(UsageError):
            parse_page_ranges(bad)


def test_page_selection_on_pdf(files):
    assert [p.number for p in pages(files["mixed_text_layer_pdf"], pages="2-")] == [2, 3]
    with pytest.raises(InputFileError, match="selects none"):
        pages(files["mixed_text_layer_pdf"], pages="9")


def test_repaired_pdf_is_flagged(files):
    assert all(p.repaired for p in pages(files["truncated_repairable_pdf"]))


def test_pdf_renders_straight_at_grid_size(files):
    document = open_pages(files["mixed_text_layer_pdf"])
    page = next(document)
    assert page.render(896, 1344).size == (896, 1344)


# ---------------------------------------------------------------- issue 13: inputs people actually have


@pytest.mark.parametrize("name", ["heic_photo", "avif_photo"])
def test_phone_photo_formats_load_upright(files, name):
    page = pages(files[name])[0]
    image = np.asarray(page.native_image())
    assert (page.width, page.height) == (200, 300) and page.flags == []
    top, left = image[:20, 80:120].mean(axis=(0, 1)), image[140:160, :20].mean(axis=(0, 1))
    assert top[0] > 150 and top[1] < 80 and left[1] > 150  # red block on top: EXIF/irot orientation applied


def test_poster_page_is_read_and_flagged(files):
    page = pages(files["poster_pdf"])[0]
    assert page.flags == ["oversized-page"] and page.error is None
    assert (page.width, page.height) == (50000, 100000)  # nominal 200 DPI size, never rasterised
    plan, tiles = tile_page(page, TilingConfig())
    assert plan.grid_size == (2, 4) and tiles.shape == (9, 3, 448, 448)  # the largest 1:2 grid: it is huge
    native = page.native_image()
    assert native.width * native.height <= 100_000_000 and abs(native.height / native.width - 2) < 0.01


def test_image_bomb_in_a_pdf_fails_its_page_before_decoding(files):
    page = pages(files["image_bomb_pdf"])[0]
    assert page.error is not None
    assert "40000x40000 image (1,600 megapixels), over the 1,000-megapixel limit" in page.error.message


def test_aes_256_passwords_are_tried_as_typed_and_saslprepped(files):
    import unicodedata

    for typed in (awkward.UNICODE_PASSWORD, unicodedata.normalize("NFD", awkward.UNICODE_PASSWORD),
                  "p\u00e4ss\u00adw\u00f6rd", "p\u00e4ssw\u00f6rd\u200b"):
        assert len(pages(files["unicode_password_pdf"], password=typed)) == 2, ascii(typed)
    assert len(pages(files["unprepared_password_pdf"], password=awkward.UNPREPARED_PASSWORD)) == 1
    for wrong, name in (("SaSLprep", "unprepared_password_pdf"), ("passwort", "unicode_password_pdf")):
        with pytest.raises(PasswordError, match="wrong password"):
            pages(files[name], password=wrong)


@pytest.mark.parametrize("name,rows", [("truncated_jpeg", 640), ("truncated_png", 601)])
def test_truncated_images_keep_the_rows_present(files, name, rows):
    page = pages(files[name])[0]
    assert page.flags == ["truncated-image"] and (page.width, page.height) == (600, rows)
    image = np.asarray(page.native_image())
    assert image[-40:].min() < 100  # the last kept rows still hold text, not libjpeg's grey fill
    assert not (image[-8:] == 128).all()


@pytest.mark.parametrize("name,fragment", [
    ("truncated_jpeg_short", "only 144 of its 800 rows (18%) are present, fewer than the 50% needed"),
    ("truncated_png_short", "only 201 of its 800 rows (25%) are present, fewer than the 50% needed"),
])
def test_images_cut_too_short_are_refused_saying_how_much_is_there(files, name, fragment):
    with pytest.raises(InputFileError, match="cut short") as caught:
        pages(files[name])
    assert fragment in caught.value.message


def test_images_cut_inside_their_headers_say_so(files, tmp_path):
    for name, keep in (("truncated_jpeg", 300), ("truncated_png", 40), ("truncated_png", 20)):
        cut = tmp_path / f"head-{keep}{files[name].suffix}"
        cut.write_bytes(files[name].read_bytes()[:keep])
        with pytest.raises(InputFileError, match="cut short"):
            pages(cut)


@pytest.mark.parametrize("name,reason", [
    ("broken_page_pdf", "its page object 6 0 R is damaged"),
    ("page_tree_cycle_pdf", "its page object 2 0 R makes a cycle in the page tree"),
])
def test_one_broken_page_object_costs_only_that_page(files, name, reason):
    loaded = pages(files[name])
    assert [p.number for p in loaded] == list(range(1, 13)) and {p.count for p in loaded} == {12}
    broken = loaded[1]
    assert broken.flags == ["broken-page"] and broken.error.message.startswith("page 2 skipped: " + reason)
    for page in loaded[:1] + loaded[2:]:
        assert page.error is None and f"Page {page.number}:" in page.text_layer and page.repaired
        assert page.render(60, 85).size == (60, 85)


def test_sound_page_trees_are_left_alone(files):
    assert not any(p.repaired for p in pages(files["mixed_text_layer_pdf"]))


def test_frames_default_per_format_and_on_request(files):
    assert [len(pages(files[n])) for n in ("animated_gif", "animated_webp", "multiframe_tiff")] == [1, 1, 3]
    assert [len(pages(files[n], frames="all")) for n in ("animated_gif", "animated_webp", "multiframe_tiff")] == [3, 3, 3]
    assert len(pages(files["multiframe_tiff"], frames="first")) == 1
    assert [p.number for p in pages(files["animated_gif"], frames="all", pages="2-")] == [2, 3]
    frames = [np.asarray(p.native_image()) for p in pages(files["animated_webp"], frames="all")]
    assert not np.array_equal(frames[0], frames[1])  # each frame is its own page, not frame 1 again
    with pytest.raises(UsageError, match="--frames"):
        pages(files["animated_gif"], frames="every")
