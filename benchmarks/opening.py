"""Opening documents before their first token: what a run with `-o DIR` does to each document before the model sees
it (content hash for the ledger, the check before the weights load, the first unit), with the check's open
document kept for the units (as runs do now) and closed and opened again (as before), side by side.

Inputs, built once into benchmarks/.cache/: 100 one-page PDFs (the pages of the 100-page test PDF), that 100-page
PDF, and 8 photos of 4032x3024 pixels (12 megapixels, JPEG, as phones take them). For each set and each way:
opens per document, and the seconds of hash + check + the first page of the units, best of --repeat runs.

Run: /work/venv/bin/python benchmarks/opening.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common

_common.setup_paths()


def one_page_pdfs(count: int = 100) -> list[Path]:
    import pymupdf

    folder = _common.cache_dir() / f"opening-{count}-one-page-pdfs"
    folder.mkdir(exist_ok=True)
    paths = [folder / f"page-{index:03d}.pdf" for index in range(count)]
    if not all(path.exists() for path in paths):
        source = pymupdf.open(_common.generated_pdf(count))
        for index, path in enumerate(paths):
            single = pymupdf.open()
            single.insert_pdf(source, from_page=index, to_page=index)
            single.save(path)
    return paths


def photos(count: int = 8) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder = _common.cache_dir() / f"opening-{count}-photos"
    folder.mkdir(exist_ok=True)
    paths = [folder / f"photo-{index}.jpg" for index in range(count)]
    for index, path in enumerate(paths):
        if not path.exists():
            rng = np.random.default_rng(index)
            small = rng.integers(0, 256, (189, 252, 3), dtype=np.uint8)  # blown up: smooth, photo-like JPEG sizes
            Image.fromarray(small).resize((4032, 3024), Image.Resampling.BICUBIC).save(path, quality=90)
    return paths


def make_task(keep: bool):
    from internvl_cli.documents.kept import KeptDocuments
    from internvl_cli.documents.tiling import TilingConfig
    from internvl_cli.engine.base import Sampling
    from internvl_cli.tasks.ocr import OcrTask
    from internvl_cli.tasks.pagewise import PageOptions

    task = OcrTask(PageOptions(tiling=TilingConfig(), sampling=Sampling(max_new_tokens=1)), "bench")
    opens = []
    real_open = task.open

    def counted(path):
        opens.append(path)
        return real_open(path)

    task.documents = KeptDocuments(counted, **({} if keep else {"max_documents": 0}))
    return task, opens


def before_first_token(paths: list[Path], keep: bool) -> tuple[float, float, int]:
    """(seconds of hashing + checking every document, seconds of opening each one's units up to its first page,
    opens) as a run does them: plan and checks before the weights load, then units in order."""
    from internvl_cli.runs.ledger import content_hash

    task, opens = make_task(keep)
    start = time.perf_counter()
    for path in paths:
        content_hash(path)
        task.check(path)
    planned = time.perf_counter()
    for path in paths:
        next(iter(task.pages(path)))  # the first page of the units: opened, or the check's own
    return planned - start, time.perf_counter() - planned, len(opens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the fastest is shown (default 3)")
    args = parser.parse_args()
    sets = {"100 one-page PDFs": one_page_pdfs(), "one 100-page PDF": [_common.generated_pdf(100)],
            "8 photos, 12 MP JPEG": photos()}
    note = _common.machine_note()
    rows = []
    for name, paths in sets.items():
        figures = {}
        for keep in (False, True):
            runs = [before_first_token(paths, keep) for _ in range(args.repeat)]
            plan, units, opens = min(runs, key=lambda run: run[0] + run[1])
            figures[keep] = plan + units
            way = "kept for the units (now)" if keep else "opened again (before)"
            rows.append([f"{name}: {way}", f"{opens / len(paths):.2f}", f"{plan:.3f}", f"{units:.3f}",
                         f"{plan + units:.3f}", f"{1000 * (plan + units) / len(paths):.2f}"])
        rows.append([f"{name}: saved", "", "", "", f"{figures[False] - figures[True]:.3f}",
                     f"{100 * (1 - figures[True] / figures[False]):.0f}%"])
    print(f"opening documents before their first token (hash + check, then the units' first page); {note}\n")
    _common.print_table(["documents: way", "opens/doc", "hash+check s", "units s", "total s", "ms/doc"], rows)


if __name__ == "__main__":
    main()
