"""Sanity checks for tests/awkward.py: each generated file really has the awkward property it claims."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

import awkward


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return awkward.make_all(tmp_path_factory.mktemp("awkward"))


def _rgb(page: pymupdf.Page) -> np.ndarray:
    pixmap = page.get_pixmap(alpha=False)
    return np.frombuffer(pixmap.samples, np.uint8).reshape(pixmap.h, pixmap.w, pixmap.n)


def test_every_maker_writes_its_own_file(files: dict[str, Path]) -> None:
    assert len(files) == len(awkward.MAKERS)
    assert len({path.name for path in files.values()}) == len(files)
    assert all(path.is_file() for path in files.values())


def test_image_modes_and_formats(files: dict[str, Path]) -> None:
    expected = {"cmyk_jpeg": ("JPEG", "CMYK"), "progressive_jpeg": ("JPEG", "RGB"), "webp": ("WEBP", "RGB"),
                "bmp": ("BMP", "RGB"), "gif": ("GIF", "P"), "palette_png_transparent": ("PNG", "P"),
                "rgba_png": ("PNG", "RGBA"), "gray16_png": ("PNG", "I;16")}
    for name, (fmt, mode) in expected.items():
        with Image.open(files[name]) as image:
            assert (image.format, image.mode) == (fmt, mode), name
    with Image.open(files["progressive_jpeg"]) as image:
        assert image.info.get("progressive")


def test_tiff_has_three_pages_of_different_sizes(files: dict[str, Path]) -> None:
    with Image.open(files["multiframe_tiff"]) as image:
        sizes = []
        for frame in range(image.n_frames):
            image.seek(frame)
            sizes.append(image.size)
    assert sizes == [(600, 400), (400, 600), (300, 300)]
    assert pymupdf.open(files["multiframe_tiff"]).page_count == 3


def test_mupdf_cannot_open_webp(files: dict[str, Path]) -> None:
    with pytest.raises(pymupdf.FileDataError):
        pymupdf.open(files["webp"])


def test_transparency_turns_black_when_dropped_naively(files: dict[str, Path]) -> None:
    for name in ("palette_png_transparent", "rgba_png"):
        with Image.open(files[name]) as image:
            assert image.convert("RGBA").getpixel((0, 0))[3] == 0, name
            assert image.convert("RGB").getpixel((0, 0)) == (0, 0, 0), name


def test_gray16_clips_to_white_when_converted_naively(files: dict[str, Path]) -> None:
    with Image.open(files["gray16_png"]) as image:
        values = np.asarray(image)
        naive = np.asarray(image.convert("L"))
    assert values.min() == 0 and values.max() == 65535
    assert (naive[:150] == 255).all()  # text and background alike
    assert ((values[:150] >> 8) < 32).any()  # scaled properly, the dark text is there


def test_exif_orientation_puts_red_block_on_top(files: dict[str, Path]) -> None:
    with Image.open(files["exif_rotated_jpeg"]) as stored:
        assert stored.size == (300, 200)
        assert stored.getexif()[0x0112] == 6
        assert stored.getpixel((10, 100))[0] > 200  # red on the left as stored
        upright = ImageOps.exif_transpose(stored)
    assert upright.size == (200, 300)
    assert upright.getpixel((100, 10))[0] > 200 and upright.getpixel((100, 10))[1] < 50
    assert upright.getpixel((100, 290)) == pytest.approx((255, 255, 255), abs=8)
    # MuPDF applies the orientation itself.
    pixels = _rgb(pymupdf.open(files["exif_rotated_jpeg"])[0])
    assert pixels.shape[0] > pixels.shape[1] and pixels[5, pixels.shape[1] // 2, 1] < 50


def test_tiny_wide_and_empty_images(files: dict[str, Path]) -> None:
    with Image.open(files["tiny_png"]) as image:
        assert image.size == (1, 1)
    with Image.open(files["extreme_aspect"]) as image:
        assert image.size == (4000, 60)
    assert files["empty_png"].stat().st_size == 0
    with pytest.raises(UnidentifiedImageError):
        Image.open(files["empty_png"])
    with pytest.raises(pymupdf.EmptyFileError):
        pymupdf.open(files["empty_png"])


def test_bomb_is_small_on_disk_but_refused_by_pil(files: dict[str, Path]) -> None:
    path = files["decompression_bomb"]
    assert path.stat().st_size < 300_000
    header = path.read_bytes()[16:24]
    assert int.from_bytes(header[:4], "big") == int.from_bytes(header[4:], "big") == awkward.BOMB_SIDE
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    # PyMuPDF has no such guard: it opens the bomb as a huge page without decoding it.
    assert pymupdf.open(path)[0].rect.width == awkward.BOMB_SIDE * 0.75


def test_owner_password_only_opens_silently(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["owner_password_pdf"])
    assert not doc.needs_pass and not doc.is_encrypted
    assert "AES" in doc.metadata["encryption"]
    assert "Owner-protected page 1" in doc[0].get_text()


def test_user_password_is_needed(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["user_password_pdf"])
    assert doc.needs_pass and doc.is_encrypted and doc.metadata is None
    with pytest.raises(ValueError):
        doc.load_page(0)
    assert doc.authenticate("wrong") == 0
    assert doc.authenticate(awkward.USER_PASSWORD) == 2
    assert "Secret page 1" in doc[0].get_text()
    assert pymupdf.open(files["user_password_pdf"]).authenticate(awkward.OWNER_PASSWORD) == 4


@pytest.mark.parametrize("name", ["truncated_pdf", "random_bytes_pdf", "text_as_pdf"])
def test_broken_pdfs_fail_to_open(files: dict[str, Path], name: str) -> None:
    with pytest.raises(pymupdf.FileDataError):
        pymupdf.open(files[name])


def test_text_file_is_not_a_pdf_by_its_magic(files: dict[str, Path]) -> None:
    assert files["text_as_pdf"].suffix == ".pdf"
    assert not files["text_as_pdf"].read_bytes().startswith(b"%PDF-")


def test_truncated_pdf_can_be_repaired_into_blank_pages(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["truncated_repairable_pdf"])
    assert doc.is_repaired and doc.page_count == 10
    assert "Page 1:" in doc[0].get_text()
    assert doc[9].get_text() == ""


def test_zero_page_pdf_opens_with_no_pages(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["zero_page_pdf"])
    assert doc.page_count == 0 and not doc.is_repaired


def test_huge_page_size(files: dict[str, Path]) -> None:
    page = pymupdf.open(files["huge_page_pdf"])[0]
    assert (page.rect.width, page.rect.height) == (14400, 14400)


def test_mixed_text_layer(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["mixed_text_layer_pdf"])
    assert [bool(page.get_text().strip()) for page in doc] == [True, False, True]
    assert len(doc[1].get_images()) == 1


def test_rotated_page_reads_upright_when_rotation_is_honoured(files: dict[str, Path]) -> None:
    page = pymupdf.open(files["rotated_page_pdf"])[0]
    assert page.rotation == 90
    assert (page.rect.width, page.rect.height) == (842, 595)
    ink = _rgb(page).min(axis=2) < 128
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    # One horizontal line of text near the top-left: wide, short.
    assert rows.max() < 150 and (cols.max() - cols.min()) > 5 * (rows.max() - rows.min())


def test_csv_is_neither_image_nor_pdf(files: dict[str, Path]) -> None:
    with pytest.raises(UnidentifiedImageError):
        Image.open(files["non_document"])
    assert not files["non_document"].read_bytes().startswith(b"%PDF-")


# ---------------------------------------------------------------- phone photos, animations, files cut short


def test_heic_is_upright_through_libheif_and_avif_keeps_its_exif_orientation(files: dict[str, Path]) -> None:
    import pi_heif

    assert pi_heif.is_supported(files["heic_photo"])
    heif = pi_heif.open_heif(files["heic_photo"])
    assert heif.size == (200, 300)  # libheif applied the irot transform
    exif = Image.Exif()
    exif.load(heif.info["exif"])
    assert exif[0x0112] == 6  # the file's EXIF still says "rotate" ...
    pi_heif.register_heif_opener()
    with Image.open(files["heic_photo"]) as image:  # ... which the Pillow plugin resets, so nothing turns twice
        assert image.size == (200, 300) and image.getexif()[0x0112] == 1
    with Image.open(files["avif_photo"]) as image:
        assert image.format == "AVIF" and image.size == (300, 200) and image.getexif()[0x0112] == 6


def test_animations_have_three_frames(files: dict[str, Path]) -> None:
    for name in ("animated_gif", "animated_webp"):
        with Image.open(files[name]) as image:
            assert image.n_frames == 3, name


@pytest.mark.parametrize("name", ["truncated_jpeg", "truncated_jpeg_short", "truncated_png", "truncated_png_short"])
def test_truncated_images_open_but_do_not_load(files: dict[str, Path], name: str) -> None:
    with Image.open(files[name]) as image:
        assert image.size == (600, 800)
        with pytest.raises(OSError, match="truncated"):
            image.load()


def test_poster_page_is_past_the_pdf_maximum(files: dict[str, Path]) -> None:
    page = pymupdf.open(files["poster_pdf"])[0]
    assert (page.rect.width, page.rect.height) == (18000, 36000)
    assert page.get_pixmap(matrix=pymupdf.Matrix(0.01, 0.01)).width == 180


def test_image_bomb_declares_1600_megapixels_in_a_small_valid_stream(files: dict[str, Path]) -> None:
    import zlib

    path = files["image_bomb_pdf"]
    assert path.stat().st_size < 300_000
    doc = pymupdf.open(path)
    (xref, _, width, height, bpc, *_rest), = doc[0].get_images(full=True)
    assert (width, height, bpc) == (40000, 40000, 1)
    head = zlib.decompressobj().decompress(doc.xref_stream_raw(xref), 10_000_000)
    assert len(head) == 10_000_000 and set(head) == {0xFF}


def test_mupdf_does_not_saslprep_aes_256_passwords(files: dict[str, Path]) -> None:
    import unicodedata

    doc = pymupdf.open(files["unicode_password_pdf"])
    assert doc.xref_get_key(-1, "Encrypt/R") == ("int", "6")
    assert doc.authenticate(unicodedata.normalize("NFD", awkward.UNICODE_PASSWORD)) == 0
    assert doc.authenticate("p\u00e4ss\u00adw\u00f6rd") == 0  # a soft hyphen, mapped to nothing by SASLprep
    assert doc.authenticate(awkward.UNICODE_PASSWORD) == 2
    unprepared = pymupdf.open(files["unprepared_password_pdf"])
    assert unprepared.authenticate("SaSLprep") == 0  # MuPDF encrypted with the raw bytes
    assert unprepared.authenticate(awkward.UNPREPARED_PASSWORD) == 2


def test_damaged_page_object_becomes_a_silent_blank_page(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["broken_page_pdf"])
    assert doc.page_count == 12 and not doc.is_repaired
    assert "Page 1:" in doc[0].get_text() and "Page 3:" in doc[2].get_text()
    assert doc[1].get_text() == "" and (doc[1].rect.width, doc[1].rect.height) == (612, 792)


def test_page_tree_cycle_breaks_every_page_after_it(files: dict[str, Path]) -> None:
    doc = pymupdf.open(files["page_tree_cycle_pdf"])
    assert doc.page_count == 12 and "Page 1:" in doc[0].get_text()
    for index in (1, 2, 11):
        with pytest.raises(Exception, match="cycle in page tree"):
            doc.load_page(index)
