"""Lines with boxes and searchable PDFs (`ocr --lines`, `--format pdf|hocr`), with answers forced through the real
tiny model: the transcription first, then one grounding answer per line, as the README describes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from forcing import forced_engines
from internvl_cli.errors import ExitCode
from internvl_cli.tasks.lines import MAX_GROUNDED_LINES, parse_box, place_lines, transcript_lines

pymupdf = pytest.importorskip("pymupdf")

# A scan's lines and where they are, on InternVL's 0-1000 grid of the page image.
LINES = {
    "Invoice 4711": [100, 80, 500, 120],
    "Widgets delivered in March": [100, 200, 800, 240],
    "Total due 99.50 EUR": [100, 320, 600, 360],
}
TRANSCRIPT = "# Invoice 4711\n\nWidgets delivered in March\n\n**Total due 99.50 EUR**"
OCR_MARKER = "Transcribe everything"  # in prompts/ocr.md, never in the grounding prompt
# Where search_for's glyph boxes may sit from the line's box, in points (a stated tolerance: MuPDF measures glyphs
# from the font's ascender and descender, which is how the font size is chosen).
TOLERANCE = 1.5
PAGE = (595.0, 842.0)  # A4 in points
DPI = 100


def answers(boxes: dict[str, str] | None = None) -> dict[str, str]:
    grounded = {text: f"<ref>{text}</ref><box>[[{', '.join(map(str, box))}]]</box>" for text, box in LINES.items()}
    return {OCR_MARKER: TRANSCRIPT, **grounded, **(boxes or {})}


def scan_image(size: tuple[int, int]) -> Image.Image:
    """A page image with dark bars where the lines are (what the pixels look like matters to the comparisons)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for box in LINES.values():
        draw.rectangle([box[0] * size[0] / 1000, box[1] * size[1] / 1000, box[2] * size[0] / 1000,
                        box[3] * size[1] / 1000], fill=(40, 40, 40))
    return image


def make_scan_pdf(path: Path, pages: int = 1) -> Path:
    """An image-only PDF, as a scanner writes one: each page one JPEG, no text."""
    doc = pymupdf.open()
    for number in range(pages):
        page = doc.new_page(width=PAGE[0], height=PAGE[1])
        image = scan_image((round(PAGE[0] / 72 * DPI), round(PAGE[1] / 72 * DPI)))
        ImageDraw.Draw(image).text((20, 20 + number * 10), f"page {number + 1}", fill="black")
        buffer = path.with_suffix(f".{number}.jpg")
        image.save(buffer, quality=90)
        page.insert_image(page.rect, filename=str(buffer))
        buffer.unlink()
    doc.save(path)
    return path


def expected_box(text: str, size: tuple[float, float]) -> list[float]:
    box = LINES[text]
    return [box[0] / 1000 * size[0], box[1] / 1000 * size[1], box[2] / 1000 * size[0], box[3] / 1000 * size[1]]


def renders_equal(a: Path, b: Path, dpi: int = 72) -> bool:
    with pymupdf.open(a) as first, pymupdf.open(b) as second:
        if first.page_count != second.page_count:
            return False
        return all(p.get_pixmap(dpi=dpi).samples == q.get_pixmap(dpi=dpi).samples for p, q in zip(first, second))


def test_lines_of_a_transcription():
    text = "# Title\n\n- item one\n| a | b |\n|---|---|\n| 1 | 2 |\n\n**bold** and `code`\n<!-- x -->"
    assert transcript_lines(text) == ["Title", "item one", "a b", "1 2", "bold and code"]


def test_boxes_are_read_repaired_or_dropped():
    assert parse_box("Total[[1, 2, 3, 4]]") == (1.0, 2.0, 3.0, 4.0)
    assert parse_box("<ref>x</ref><box>[[10,20,30,40]]</box>") == (10.0, 20.0, 30.0, 40.0)
    assert parse_box("no box here") is None and parse_box("[[1, 2, 3]]") is None
    texts = ["swapped", "outside", "missing", "zero", "overlap", "above", "offpage", "fine"]
    given = ["[[500, 100, 100, 50]]", "[[100, 150, 1200, 200]]", "nothing", "[[100, 300, 100, 340]]",
             "[[110, 150, 1000, 200]]", "[[100, 0, 500, 20]]", "[[1100, 900, 1300, 950]]", "[[100, 600, 400, 640]]"]
    placed = place_lines(texts, given, (1000.0, 2000.0))
    boxes = {line["text"]: line["box"] for line in placed.lines}
    assert boxes["swapped"] == [100.0, 100.0, 500.0, 200.0]  # corners ordered (y doubled: a 1000x2000 page)
    assert boxes["outside"] == [100.0, 300.0, 1000.0, 400.0]  # clipped to the page
    assert boxes["missing"] is None and boxes["zero"] is None and boxes["offpage"] is None
    assert boxes["overlap"] is None  # the same region as "outside": one of two lines cannot be there
    assert boxes["above"] is None  # read after "outside" but above it, in the same column
    assert boxes["fine"] == [100.0, 1200.0, 400.0, 1280.0]
    assert placed.flags == ["box-repaired", "box-dropped"]
    many = place_lines([f"line {i}" for i in range(MAX_GROUNDED_LINES + 2)],
                       [None] * MAX_GROUNDED_LINES, (100.0, 100.0))
    assert "boxes-capped" in many.flags and many.lines[-1] == {"text": f"line {MAX_GROUNDED_LINES + 1}", "box": None}


def test_a_second_column_is_not_out_of_order():
    placed = place_lines(["left", "right"], ["[[50, 500, 450, 540]]", "[[550, 100, 950, 140]]"], (1000.0, 1000.0))
    assert all(line["box"] for line in placed.lines) and placed.flags == []


def test_jsonl_lines_are_grounded_in_page_coordinates(cli, tiny_model, tmp_path, monkeypatch):
    scan = make_scan_pdf(tmp_path / "scan.pdf")
    with forced_engines(monkeypatch, answers()) as made:
        code, stdout, err = cli("ocr", scan, "--lines", "--format", "jsonl", "--model", tiny_model)
    assert code == 0, err
    record = json.loads(stdout)
    assert record["page_size"] == list(PAGE) and record["lines_source"] == "grounding"
    assert [line["text"] for line in record["lines"]] == list(LINES)
    for line in record["lines"]:
        assert line["box"] == pytest.approx(expected_box(line["text"], PAGE), abs=0.01)
    assert sum(len(p.markers) for p in made) == 1 + len(LINES)  # the page, then one question per line
    assert record["flags"] == []


def test_an_image_gets_pixel_boxes(cli, tiny_model, tmp_path, monkeypatch):
    image = tmp_path / "page.png"
    scan_image((800, 1000)).save(image)
    with forced_engines(monkeypatch, answers()):
        code, stdout, err = cli("ocr", image, "--lines", "--format", "jsonl", "--model", tiny_model)
    assert code == 0, err
    record = json.loads(stdout)
    assert record["page_size"] == [800.0, 1000.0]
    assert record["lines"][0]["box"] == pytest.approx(expected_box("Invoice 4711", (800, 1000)))


def check_searchable(output: Path, size: tuple[float, float]) -> None:
    """Every line found by PyMuPDF's search inside its box, and the extracted text in reading order."""
    with pymupdf.open(output) as doc:
        page = doc[0]
        for text in LINES:
            box = pymupdf.Rect(expected_box(text, size))
            hits = page.search_for(text)
            assert hits, f"{text!r} not found"
            hit = hits[0]
            assert max(abs(hit.x0 - box.x0), abs(hit.y0 - box.y0), abs(hit.x1 - box.x1),
                       abs(hit.y1 - box.y1)) <= TOLERANCE, (text, hit, box)
        assert [line.strip() for line in page.get_text("text").splitlines() if line.strip()] == list(LINES)


def test_a_scanned_pdf_becomes_searchable_with_its_pages_untouched(cli, tiny_model, tmp_path, monkeypatch):
    import pikepdf

    scan = make_scan_pdf(tmp_path / "scan.pdf")
    output = tmp_path / "scan.ocr.pdf"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", scan, "-o", output, "--model", tiny_model)
    assert code == 0, err
    check_searchable(output, PAGE)
    assert renders_equal(scan, output, dpi=72) and renders_equal(scan, output, dpi=150)
    with pikepdf.open(output) as pdf, pikepdf.open(scan) as original:
        images = [image.read_raw_bytes() for image in pdf.pages[0].get_images().values()]
        assert images and images == [image.read_raw_bytes() for image in original.pages[0].get_images().values()]
    if shutil.which("qpdf"):
        assert subprocess.run(["qpdf", "--check", str(output)], capture_output=True).returncode == 0


def test_an_image_becomes_a_one_page_pdf_at_its_resolution(cli, tiny_model, tmp_path, monkeypatch):
    image = tmp_path / "page.png"
    scan_image((800, 1000)).save(image, dpi=(144, 144))
    output = tmp_path / "page.pdf"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", image, "-o", output, "--model", tiny_model)
    assert code == 0, err
    with pymupdf.open(output) as doc:
        assert doc.page_count == 1 and tuple(doc[0].rect)[2:] == (400.0, 500.0)  # 800x1000 px at 144 DPI
        pixmap = doc[0].get_pixmap(dpi=144)
        assert (pixmap.width, pixmap.height) == (800, 1000)
        assert Image.frombytes("RGB", (800, 1000), pixmap.samples).tobytes() == Image.open(image).convert(
            "RGB").tobytes()
    check_searchable(output, (400.0, 500.0))


def test_hocr_has_pages_lines_and_words(cli, tiny_model, tmp_path, monkeypatch):
    scan = make_scan_pdf(tmp_path / "scan.pdf")
    output = tmp_path / "scan.hocr"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", scan, "-o", output, "--model", tiny_model)
    assert code == 0, err
    hocr = output.read_text(encoding="utf-8")
    assert hocr.count("class=\"ocr_page\"") == 1 and hocr.count("class=\"ocr_line\"") == 3
    assert hocr.count("class=\"ocrx_word\"") == sum(len(text.split()) for text in LINES)
    assert 'title="bbox 60 67 298 101">Invoice 4711' not in hocr  # words, not whole lines, carry the text
    assert '>Invoice</span>' in hocr and "bbox 0 0 595 842" in hocr


def test_bad_boxes_in_answers_never_crash_and_are_flagged(cli, tiny_model, tmp_path, monkeypatch):
    scan = make_scan_pdf(tmp_path / "scan.pdf")
    bad = {"Invoice 4711": "<ref>Invoice 4711</ref><box>[[100, 80, 500</box>",  # malformed
           "Widgets delivered in March": "<ref>Widgets delivered in March</ref><box>[[100, 80, 500, 120]]</box>",
           "Total due 99.50 EUR": "<ref>Total due 99.50 EUR</ref><box>[[-50, 320, 1400, 360]]</box>"}  # off the page
    output = tmp_path / "out.pdf"
    with forced_engines(monkeypatch, answers(bad)):
        code, _, err = cli("ocr", scan, "-o", output, "--model", tiny_model)
        assert code == 0, err
        code, stdout, err = cli("ocr", scan, "--lines", "--format", "jsonl", "--model", tiny_model)
    record = json.loads(stdout)
    boxes = [line["box"] for line in record["lines"]]
    assert boxes[0] is None and boxes[1] is not None  # the first had no box; the second took its place
    assert boxes[2] == pytest.approx([0.0, 320 / 1000 * PAGE[1], PAGE[0], 360 / 1000 * PAGE[1]])
    assert set(record["flags"]) == {"box-dropped", "box-repaired"}
    with pymupdf.open(output) as doc:
        assert doc[0].search_for("Total due") and not doc[0].search_for("Invoice 4711")


def text_pdf(path: Path, hidden: bool) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=PAGE[0], height=PAGE[1])
    page.insert_text((72, 100), "An old layer that reads badly, from another OCR tool", fontsize=12,
                     render_mode=3 if hidden else 0)
    doc.save(path)
    return path


def test_pages_with_text_keep_it_unless_redo_ocr(cli, tiny_model, tmp_path, monkeypatch):
    visible, hidden = text_pdf(tmp_path / "visible.pdf", False), text_pdf(tmp_path / "hidden.pdf", True)
    with forced_engines(monkeypatch, answers({"An old layer": TRANSCRIPT})) as made:
        code, stdout, err = cli("ocr", visible, "--lines", "--format", "jsonl", "--model", tiny_model)
        assert code == 0, err
        record = json.loads(stdout)
        assert record["lines_source"] == "text-layer" and record["lines"][0]["text"].startswith("An old layer")
        assert sum(len(p.markers) for p in made) == 1  # the page only: its own layer gives the boxes
        for source in (visible, hidden):
            code, _, err = cli("ocr", source, "-o", tmp_path / f"{source.stem}.default.pdf", "--model", tiny_model)
            assert code == 0, err
            assert (tmp_path / f"{source.stem}.default.pdf").read_bytes() and renders_equal(
                source, tmp_path / f"{source.stem}.default.pdf")
            with pymupdf.open(tmp_path / f"{source.stem}.default.pdf") as doc:
                assert doc[0].get_text().startswith("An old layer")  # left as it was
        code, _, err = cli("ocr", hidden, "-o", tmp_path / "hidden.redo.pdf", "--redo-ocr", "--model", tiny_model)
        assert code == 0, err
        code, _, err = cli("ocr", visible, "-o", tmp_path / "visible.redo.pdf", "--redo-ocr", "--model", tiny_model)
        assert code == 0, err
    with pymupdf.open(tmp_path / "hidden.redo.pdf") as doc:
        assert "An old layer" not in doc[0].get_text() and doc[0].search_for("Invoice 4711")
    with pymupdf.open(tmp_path / "visible.redo.pdf") as doc:
        assert doc[0].get_text().startswith("An old layer") and not doc[0].search_for("Invoice 4711")


def test_pdf_format_needs_an_output(cli, tiny_model, tmp_path):
    code, _, err = cli("ocr", make_scan_pdf(tmp_path / "scan.pdf"), "--format", "pdf", "--model", tiny_model)
    assert code == ExitCode.BAD_ARGS and "-o" in err


def test_a_folder_gets_a_pdf_per_document_and_resumes(cli, tiny_model, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_scan_pdf(inbox / "a.pdf")
    scan_image((600, 800)).save(inbox / "b.png")
    out = tmp_path / "out"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", inbox, "-o", out, "--format", "pdf", "--model", tiny_model)
        assert code == 0, err
        assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.pdf.pdf", "b.png.pdf"]
        code, _, err = cli("ocr", inbox, "-o", out, "--format", "pdf", "--model", tiny_model)
    assert code == 0 and "2 documents already done" in err and "loading model" not in err


def test_sigkill_mid_run_then_resume_gives_one_pdf_each(tiny_model, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(8):
        make_scan_pdf(inbox / f"doc{i}.pdf", pages=1 + i % 2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "internvl_cli.cli", "ocr", str(inbox), "-o", str(out), "--format", "pdf",
            "--model", str(tiny_model), "--max-new-tokens", "6", "--batch-size", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    from test_batch import start_until_first_output

    proc = start_until_first_output(args, out, env)
    proc.kill()
    proc.wait()
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    outputs = sorted(p.name for p in out.rglob("*") if p.is_file() and ".internvl" not in p.parts)
    assert outputs == [f"doc{i}.pdf.pdf" for i in range(8)]
    for i in range(8):
        assert renders_equal(inbox / f"doc{i}.pdf", out / f"doc{i}.pdf.pdf")  # whole files, never torn


def test_eval_scores_the_records_boxes_against_icdar_lines(cli, tiny_model, tmp_path, monkeypatch):
    """The records' `lines` are what `eval` reads: ICDAR truth at the forced boxes scores every line a hit."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    size = (800, 1000)
    scan_image(size).save(inbox / "page.png")
    truth = []
    for text in LINES:
        x1, y1, x2, y2 = (round(v) for v in expected_box(text, size))
        truth.append(f"{x1},{y1},{x2},{y1},{x2},{y2},{x1},{y2},{text}")
    (inbox / "page.txt").write_text("\n".join(truth) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", inbox / "page.png", "-o", out, "--lines", "--format", "jsonl", "--model", tiny_model)
    assert code == 0, err
    code, stdout, err = cli("eval", "--truth", inbox, out, "--json")
    assert code == 0, err
    document = next(json.loads(line) for line in stdout.splitlines() if '"metrics"' in line)
    assert document["metrics"]["box_recall"] == 1.0 and document["metrics"]["box_precision"] == 1.0


def test_a_rotated_page_gets_its_text_where_the_lines_are_shown(cli, tiny_model, tmp_path, monkeypatch):
    """A page with /Rotate 90: boxes are on the page as shown, and so is the text layer."""
    scan = make_scan_pdf(tmp_path / "portrait.pdf")
    with pymupdf.open(scan) as doc:
        doc[0].set_rotation(90)
        doc.save(tmp_path / "rotated.pdf")
    output = tmp_path / "rotated.ocr.pdf"
    with forced_engines(monkeypatch, answers()):
        code, _, err = cli("ocr", tmp_path / "rotated.pdf", "-o", output, "--model", tiny_model)
    assert code == 0, err
    shown = (PAGE[1], PAGE[0])
    with pymupdf.open(output) as doc:
        page = doc[0]
        assert page.rotation == 90 and tuple(page.rect)[2:] == shown
        for text in LINES:
            hit = page.search_for(text)[0] * page.rotation_matrix  # search_for answers in unrotated coordinates
            box = pymupdf.Rect(expected_box(text, shown))
            assert max(abs(hit.x0 - box.x0), abs(hit.y0 - box.y0), abs(hit.x1 - box.x1),
                       abs(hit.y1 - box.y1)) <= TOLERANCE, (text, hit, box)
    assert renders_equal(tmp_path / "rotated.pdf", output)
