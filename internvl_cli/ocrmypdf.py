"""The OCRmyPDF plugin, a client of the core like the CLI: OCRmyPDF's page images -> `ocr` with line boxes ->
OcrElement trees (`ocrmypdf --plugin internvl_cli.ocrmypdf scan.pdf out.pdf`). Needs the `ocrmypdf` extra.

One engine per OCRmyPDF run: OCRmyPDF 17 runs its page workers as threads (its default, and this plugin asks for
it), so they share one engine held here, loaded by the first page; its generation is serialised by a lock (one
model, one device) except for `--internvl-engine server`, whose servers batch concurrent requests themselves.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from ocrmypdf import hookimpl
from ocrmypdf.exceptions import BadArgsError
from ocrmypdf.hocrtransform import BoundingBox, OcrClass, OcrElement
from ocrmypdf.pluginspec import OcrEngine, OrientationConfidence
from pydantic import BaseModel

from .engine import EngineSettings, load_engine
from .engine.base import ENGINE_CHOICES
from .errors import InternVLError

_lock = threading.Lock()
_engines: dict[tuple, object] = {}  # (model, engine, servers) -> the one engine of this OCRmyPDF run


class InternVLOptions(BaseModel):
    """The plugin's options, as OCRmyPDF reads them (`options.internvl.model`, ...)."""

    model: str | None = None
    engine: str = "hf"
    server: list[str] | None = None
    max_tiles: int | None = None
    max_new_tokens: int | None = None


@hookimpl
def initialize(plugin_manager) -> None:
    # This plugin is the OCR engine: Tesseract's own checks (its binary, its version) must not stop the run.
    plugin_manager.set_blocked("ocrmypdf.builtin_plugins.tesseract_ocr")


@hookimpl
def register_options() -> dict[str, type[BaseModel]]:
    # OCRmyPDF's own checks read Tesseract's options (their defaults) whichever engine runs.
    from ocrmypdf.builtin_plugins.tesseract_ocr import TesseractOptions

    return {"internvl": InternVLOptions, "tesseract": TesseractOptions}


@hookimpl
def add_options(parser) -> None:
    group = parser.add_argument_group("InternVL", "OCR with an InternVL model (internvl-cli)")
    group.add_argument("--internvl-model", metavar="MODEL",
                       help="preset, hub id or local checkpoint (internvl-cli's default preset when not given)")
    group.add_argument("--internvl-engine", choices=ENGINE_CHOICES, default="hf",
                       help="hf (transformers, in this process), vllm (in this process) or server")
    group.add_argument("--internvl-server", metavar="URL", action="append",
                       help="an OpenAI-compatible server's URL for --internvl-engine server (repeatable)")
    group.add_argument("--internvl-max-tiles", metavar="N", type=int, help="tiles per page at most")
    group.add_argument("--internvl-max-new-tokens", metavar="N", type=int, help="answer tokens per page at most")


@hookimpl
def check_options(options) -> None:
    settings = options.internvl
    if settings.engine == "server" and not settings.server:
        raise BadArgsError("--internvl-engine server needs --internvl-server URL")
    if settings.server and settings.engine != "server":
        raise BadArgsError("--internvl-server is only used with --internvl-engine server")
    options.use_threads = True  # the page workers must share this process's one engine


@hookimpl
def get_ocr_engine(options) -> OcrEngine:
    return InternVLOcrEngine()


class InternVLOcrEngine(OcrEngine):
    """OCRmyPDF's engine interface on `internvl ocr --lines`: the page image transcribed, each line grounded."""

    @staticmethod
    def version() -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("internvl-cli")
        except PackageNotFoundError:
            return "unknown"

    @staticmethod
    def creator_tag(options) -> str:
        return f"internvl-cli {InternVLOcrEngine.version()}"

    def __str__(self) -> str:
        return f"internvl-cli {self.version()}"

    @staticmethod
    def languages(options) -> set[str]:
        return set()  # the model reads what it reads; OCRmyPDF's -l is not used

    @staticmethod
    def get_orientation(input_file: Path, options) -> OrientationConfidence:
        return OrientationConfidence(angle=0, confidence=0.0)

    @staticmethod
    def get_deskew(input_file: Path, options) -> float:
        return 0.0

    @staticmethod
    def supports_generate_ocr() -> bool:
        return True

    @staticmethod
    def generate_ocr(input_file: Path, options, page_number: int = 0) -> tuple[OcrElement, str]:
        record = page_record(Path(input_file), options.internvl)
        return page_tree(record, page_number, _dpi(Path(input_file))), record.get("text", "")

    @staticmethod
    def generate_hocr(input_file: Path, output_hocr: Path, output_text: Path, options) -> None:
        raise NotImplementedError("internvl-cli gives OCRmyPDF OcrElement trees (generate_ocr), not hOCR files")

    @staticmethod
    def generate_pdf(input_file: Path, output_pdf: Path, output_text: Path, options) -> None:
        raise NotImplementedError("internvl-cli does not render PDFs for OCRmyPDF: use --pdf-renderer auto")


def shared_engine(settings: InternVLOptions):
    """The run's one engine for these settings, made by the first page that asks (weights load with its work)."""
    key = (settings.model, settings.engine, tuple(settings.server or ()))
    with _lock:
        if key not in _engines:
            _engines[key] = load_engine(settings.model, settings=EngineSettings(
                kind=settings.engine, servers=list(settings.server or ())))
        return _engines[key]


def page_record(image: Path, settings: InternVLOptions) -> dict:
    """The `ocr --lines` JSONL record of one page image (boxes in its pixels), through the same batch run as the
    CLI's; written beside the image in OCRmyPDF's work folder and read back."""
    from .engine.base import Sampling
    from .runs.batch import BatchSettings, run_documents
    from .tasks.ocr import OcrTask
    from .tasks.pagewise import PageOptions

    engine = shared_engine(settings)
    options = PageOptions(tiling=engine.tiling.with_limits(None, settings.max_tiles),
                          sampling=Sampling() if settings.max_new_tokens is None
                          else Sampling(max_new_tokens=settings.max_new_tokens))
    task = OcrTask(options, engine.model_id, lines=True)
    target = image.with_name(image.name + ".internvl.jsonl")
    run = lambda: run_documents(task, engine, BatchSettings(paths=[str(image)], output=target), "jsonl", ".jsonl")
    try:
        if settings.engine == "server":
            report = run()
        else:
            with _lock:
                report = run()
    except InternVLError as exc:
        raise RuntimeError(f"internvl-cli: {exc}") from None
    if report.failures or not target.is_file():
        reason = report.failures[0].error if report.failures else "no output"
        raise RuntimeError(f"internvl-cli could not read page {image.name}: {reason}")
    return json.loads(target.read_text(encoding="utf-8").splitlines()[0])


def page_tree(record: dict, page_number: int, dpi: float) -> OcrElement:
    """A page's OcrElement tree: its boxed lines, each with its words spread by the font's character widths (as in
    `--format pdf`); lines without a box are left out of the layer."""
    from .tasks.searchable import word_boxes

    width, height = record.get("page_size") or (0.0, 0.0)
    lines = []
    for line in record.get("lines") or []:
        if not line.get("box"):
            continue
        words = [OcrElement(ocr_class=OcrClass.WORD, bbox=BoundingBox(*box), text=word)
                 for word, box in word_boxes(line["text"], line["box"])]
        lines.append(OcrElement(ocr_class=OcrClass.LINE, bbox=BoundingBox(*line["box"]), children=words))
    return OcrElement(ocr_class=OcrClass.PAGE, bbox=BoundingBox(0, 0, width, height), dpi=dpi,
                      page_number=page_number, children=lines)


def _dpi(image: Path) -> float:
    from PIL import Image

    with Image.open(image) as opened:
        dpi = opened.info.get("dpi", (300, 300))
    return float(dpi[0] if isinstance(dpi, tuple) else dpi)
