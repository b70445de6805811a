"""Peak memory (RSS high-water mark) of streaming long PDFs through render+tile and a full `internvl ocr -o` run.

Each figure is the ru_maxrss of a fresh child process, read with os.wait4 when it exits, so no measurement
inherits the memory of an earlier one:

* (a) render+tile: open_pages + tile_page over every page, each result dropped (the producer side of a run);
* (b) full pipeline: `python -m internvl_cli.cli -q ocr PDF --model TINY --max-new-tokens 1 -o OUTDIR`
      with the tiny random InternVL checkpoint of tests/tiny_models.py (real architecture, CPU).

Each is run on a 1-page, a 100-page and a long PDF: flat figures mean memory does not grow with page count.

Run: /work/venv/bin/python benchmarks/memory.py [--tile-pages 1000] [--full-pages 300] [--no-full]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

# On this 2-core CPU machine the tiny model runs 1.3-3 pages/s depending on other load (its CPU attention
# over ~4,500 tokens a page dominates), so 1,000 pages take 5-13 minutes; 300 keeps the default run near 3.
DEFAULT_FULL_PAGES = 300


# ----------------------------------------------------------------------------- child side


def child_tile(pdf: str, empty_store: bool) -> None:
    """(a) in a fresh process: render+tile every page and drop the tiles; prints pages and an RSS curve as JSON."""
    _common.setup_paths()
    import pymupdf
    from internvl_cli.documents.pages import open_pages
    from internvl_cli.documents.tiling import TilingConfig, tile_page

    config = TilingConfig()  # InternVL's defaults, the same values the checkpoints' preprocessor config holds
    with pymupdf.open(pdf) as doc:
        pages = doc.page_count
    marks = {max(1, pages * quarter // 4) for quarter in (1, 2, 3, 4)}
    curve = []
    for number, page in enumerate(open_pages(Path(pdf)), start=1):
        tile_page(page, config)
        if empty_store:  # control run: drop MuPDF's cache of decoded images and fonts after every page
            pymupdf.TOOLS.store_shrink(100)
        if number in marks:
            curve.append([number, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024])
    print(json.dumps({"pages": pages, "curve": curve}))


# ----------------------------------------------------------------------------- parent side


def measure(command: list[str]) -> dict:
    """Runs a command to completion; returns its peak RSS (MB), wall seconds and output."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=_common.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    # wait4 gives the rusage of exactly this child (RUSAGE_CHILDREN would be the max over all children so far).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not try to reap it again
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}\n{output}")
    return {"mb": usage.ru_maxrss / 1024, "seconds": seconds, "output": output}  # ru_maxrss is in KiB on Linux


def tile_run(pdf: Path, empty_store: bool = False) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child-tile", str(pdf)]
    result = measure(command + (["--empty-store"] if empty_store else []))
    result.update(json.loads(result["output"].strip().splitlines()[-1]))
    return result


def full_run(pdf: Path, model: Path, pages: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="internvl-bench-") as out:
        # -q is a global option: it goes before the command name.
        result = measure([sys.executable, "-m", "internvl_cli.cli", "-q", "ocr", str(pdf), "--model", str(model),
                          "--max-new-tokens", "1", "-o", out])
        written = list(Path(out).glob("*.md"))
        if len(written) != 1:
            raise SystemExit(f"expected one output file in {out}, found {len(written)}")
    result["pages"] = pages
    return result


def curve_text(result: dict) -> str:
    return ", ".join(f"{pages} p: {mb:.0f} MB" for pages, mb in result["curve"])


def row(label: str, pages: int, result: dict) -> list[object]:
    return [label, pages, f"{result['mb']:.0f}", f"{result['seconds']:.1f}", f"{pages / result['seconds']:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile-pages", type=int, default=1000, help="pages of the long PDF for (a) (default 1000)")
    parser.add_argument("--full-pages", type=int, default=DEFAULT_FULL_PAGES,
                        help=f"pages of the long PDF for (b) (default {DEFAULT_FULL_PAGES}; 1000 takes 5-13 min here)")
    parser.add_argument("--no-full", action="store_true", help="only (a), no model runs")
    parser.add_argument("--child-tile", metavar="PDF", help=argparse.SUPPRESS)
    parser.add_argument("--empty-store", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_tile:
        return child_tile(args.child_tile, args.empty_store)

    note = _common.machine_note()
    sizes_a = sorted({1, 100, args.tile_pages})
    sizes_b = [] if args.no_full else sorted({1, 100, args.full_pages})
    pdfs = {n: _common.generated_pdf(n) for n in sorted(set(sizes_a + sizes_b))}  # built once, then cached
    tiles = {n: tile_run(pdfs[n]) for n in sizes_a}
    control = tile_run(pdfs[args.tile_pages], empty_store=True)
    rows = [row("(a) render+tile", n, tiles[n]) for n in sizes_a]
    rows.append(row("(a) same, MuPDF store emptied per page", args.tile_pages, control))
    if sizes_b:
        model = _common.tiny_checkpoint()
        fulls = {n: full_run(pdfs[n], model, n) for n in sizes_b}
        rows += [row("(b) internvl ocr -o (tiny model, CPU)", n, fulls[n]) for n in sizes_b]

    print(f"peak RSS of a fresh process per run (ru_maxrss via os.wait4), generated A4 PDFs; {note}\n")
    _common.print_table(["run", "pages", "peak RSS MB", "wall s", "pages/s"], rows)
    print(f"\n(a) RSS high-water mark while reading {args.tile_pages} pages: " + curve_text(tiles[args.tile_pages]))
    print("    with MuPDF's store emptied after each page:  " + curve_text(control))
    if sizes_b and args.full_pages < 1000:
        rate = args.full_pages / fulls[args.full_pages]["seconds"]
        print(f"\n(b) ran {args.full_pages} pages, not 1,000, to keep the default run near 3 minutes: at the "
              f"measured {rate:.1f} pages/s, 1,000 pages would take ~{1000 / rate / 60:.0f} min "
              "(--full-pages 1000 runs it anyway)")


if __name__ == "__main__":
    main()
