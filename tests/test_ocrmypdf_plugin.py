"""The OCRmyPDF plugin through OCRmyPDF's own pipeline (its API, in this process, so answers can be forced through
the real tiny model): a scan becomes a PDF whose text layer holds the forced lines at their boxes, with one
engine load for a multi-page file however many --jobs."""
from __future__ import annotations

import pytest

from forcing import forced_engines
from test_searchable import LINES, PAGE, answers, expected_box, make_scan_pdf

# OCRmyPDF's renderer places and sizes its own invisible font in the line box: the line's ends fall on the box
# (measured within 0.01 pt) but the glyphs' top and bottom, which MuPDF takes from the font's ascender and
# descender, sit up to ~2 pt from it (1.8 on a 34 pt line). Points, on every edge:
OCRMYPDF_TOLERANCE = 2.5
ocrmypdf = pytest.importorskip("ocrmypdf")
pymupdf = pytest.importorskip("pymupdf")


@pytest.fixture
def plugin(monkeypatch):
    """The plugin with no engine left from an earlier test, and a count of the model loads it causes."""
    from internvl_cli import ocrmypdf as plugin_module
    from internvl_cli.engine.hf import TransformersEngine

    monkeypatch.setattr(plugin_module, "_engines", {})
    loads = []
    yield plugin_module, loads, TransformersEngine


def count_loads(monkeypatch, engine_class, loads: list) -> None:
    forced_load = engine_class.load

    def load(self):
        if self.model is None:
            loads.append(self)
        forced_load(self)

    monkeypatch.setattr(engine_class, "load", load)


def test_a_scan_becomes_searchable_through_ocrmypdf_with_one_engine_load(plugin, tiny_model, tmp_path,
                                                                         monkeypatch):
    _, loads, engine_class = plugin
    scan = make_scan_pdf(tmp_path / "scan.pdf", pages=3)
    output = tmp_path / "scan.ocr.pdf"
    with forced_engines(monkeypatch, answers()):
        count_loads(monkeypatch, engine_class, loads)
        code = ocrmypdf.ocr(scan, output, plugins=["internvl_cli.ocrmypdf"], jobs=2, output_type="pdf",
                            progress_bar=False, internvl_model=str(tiny_model))
    assert code == ocrmypdf.ExitCode.ok
    assert len(loads) == 1  # three pages, two workers, one model
    with pymupdf.open(output) as doc:
        assert doc.page_count == 3
        for page in doc:
            assert tuple(page.rect)[2:] == pytest.approx(PAGE, abs=0.5)
            for text in LINES:
                box = pymupdf.Rect(expected_box(text, PAGE))
                hits = page.search_for(text)
                assert hits, (page.number, text)
                hit = hits[0]
                assert max(abs(hit.x0 - box.x0), abs(hit.y0 - box.y0), abs(hit.x1 - box.x1),
                           abs(hit.y1 - box.y1)) <= OCRMYPDF_TOLERANCE, (text, hit, box)
            words = [w[4] for w in page.get_text("words")]
            assert " ".join(words) == " ".join(LINES)  # the lines in reading order


def test_server_engine_needs_a_url(plugin, tmp_path):
    scan = make_scan_pdf(tmp_path / "scan.pdf")
    with pytest.raises(ocrmypdf.exceptions.BadArgsError):
        ocrmypdf.ocr(scan, tmp_path / "out.pdf", plugins=["internvl_cli.ocrmypdf"], output_type="pdf",
                     progress_bar=False, internvl_engine="server")
