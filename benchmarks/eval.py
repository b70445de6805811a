"""Scoring cost of `internvl eval`: 1,000 documents' outputs of each task scored in seconds, and a rerun of
`eval --run` over a finished folder that loads no model (torch is never imported).

Steps:
* write a truth folder and two output folders of `--docs` (1,000) documents per task, no model involved: OCR
  (two pages of ~150 words each, the outputs with a few words changed), extract (a 12-field record with 3 line
  items) and chart (a 5x3 table); outputs in the formats `-o` writes (`.md` with page comments, `.json` records,
  `.csv`);
* time `internvl eval --truth T A --json` and `internvl eval --truth T A B --json` (a comparison, 1,000
  bootstrap resamples) end to end as subprocesses, median of --repeat runs;
* with the tiny random checkpoint: `internvl eval --truth T2 --run "ocr --model TINY ..."` once (a real run of
  --run-docs small images), then the same command again as a subprocess, timed, reporting whether torch was
  imported and whether "loading model" appeared.

Run: python benchmarks/eval.py [--docs 1000] [--repeat 3] [--run-docs 20]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common

_common.setup_paths()

WORDS = ("invoice total amount date payment vendor customer address street city number order item price "
         "quantity tax net gross due account bank reference period terms delivery").split()


def _page(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _noisy(rng: random.Random, text: str, rate: float) -> str:
    return " ".join(rng.choice(WORDS) if rng.random() < rate else word for word in text.split())


def make_folders(docs: int, root: Path) -> tuple[Path, Path, Path]:
    """Truth and two output folders of `docs` documents per task (built once into the cache)."""
    truth, first, second = root / "truth", root / "out-a", root / "out-b"
    if (root / "done").exists():
        return truth, first, second
    for folder in (truth, first, second):
        folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for index in range(docs):
        name = f"doc-{index:05d}"
        pages = [_page(rng, 150), _page(rng, 150)]
        (truth / f"{name}.txt").write_text("\f".join(pages))
        record = {"vendor": f"Vendor {index}", "total": round(rng.uniform(1, 999), 2), "date": "2024-03-15",
                  "number": f"INV-{index}", "currency": "EUR", "tax": 19,
                  "items": [{"name": rng.choice(WORDS), "qty": rng.randint(1, 9), "price": rng.randint(1, 99)}
                            for _ in range(3)]}
        (truth / f"{name}-x.json").write_text(json.dumps(record))
        table = [["quarter", "revenue", "cost"]] + [[f"Q{q}", str(rng.randint(1, 99)), str(rng.randint(1, 99))]
                                                    for q in range(1, 5)]
        (truth / f"{name}-c.csv").write_text("\n".join(",".join(row) for row in table) + "\n")
        for folder, rate in ((first, 0.05), (second, 0.02)):
            sections = "".join(f"<!-- file: {name}.png | page: {n}/2 | source: vision -->\n\n"
                               f"{_noisy(rng, text, rate)}\n\n" for n, text in enumerate(pages, start=1))
            (folder / f"{name}.png.md").write_text(sections)
            data = dict(record, total=record["total"] if rng.random() > rate * 5 else 0)
            (folder / f"{name}-x.png.json").write_text(json.dumps({"file": f"{name}-x.png", "data": data,
                                                                   "valid": True, "seconds": 1.5}) + "\n")
            rows = [[cell if rng.random() > rate else "0" for cell in row] for row in table]
            (folder / f"{name}-c.png.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    (root / "done").write_text("")
    return truth, first, second


def timed(command: list[str], repeat: int) -> tuple[float, subprocess.CompletedProcess]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}")
    return statistics.median(times), result


RERUN = """
import sys
from internvl_cli.cli import main
try:
    main()
except SystemExit as stop:
    code = stop.code
sys.stderr.write(f"\\ntorch imported: {'torch' in sys.modules}\\n")
sys.exit(code or 0)
"""


def run_benchmark(run_docs: int, repeat: int) -> list[list[object]]:
    from PIL import Image

    model = _common.tiny_checkpoint()
    root = _common.cache_dir() / f"eval-run-{run_docs}"
    truth = root / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    for index in range(run_docs):
        image = Image.new("RGB", (64, 64), "white")
        image.putpixel((index % 64, index // 64), (0, 0, 0))
        image.save(truth / f"page-{index:03d}.png")
        (truth / f"page-{index:03d}.txt").write_text("a page")
    out = root / "out"
    command = [sys.executable, "-c", RERUN, "eval", "--truth", str(truth), "--run",
               f"ocr --model {model} --max-new-tokens 1 -o {out}"]
    start = time.perf_counter()
    first = subprocess.run(command, capture_output=True, text=True)
    first_seconds = time.perf_counter() - start
    rerun_seconds, rerun = timed(command, repeat)
    rows = []
    for label, seconds, result in (("first --run (real run)", first_seconds, first), ("rerun", rerun_seconds, rerun)):
        rows.append([label, f"{seconds:.2f}", "loading model" in result.stderr,
                     "torch imported: True" in result.stderr, result.returncode])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--run-docs", type=int, default=20)
    args = parser.parse_args()
    print(_common.machine_note())
    truth, first, second = make_folders(args.docs, _common.cache_dir() / f"eval-{args.docs}-docs")
    cli = [sys.executable, "-m", "internvl_cli.cli", "eval", "--truth", str(truth)]
    rows = []
    for label, folders in (("one run", [first]), ("two runs compared", [first, second])):
        seconds, result = timed(cli + [str(f) for f in folders] + ["--json"], args.repeat)
        documents = sum(1 for line in result.stdout.splitlines() if line.startswith('{"out"'))
        rows.append([label, documents, f"{seconds:.2f}", f"{seconds / documents * 1000:.2f}"])
    print(f"\nScoring {args.docs} documents per task (ocr, extract, chart), end to end, median of {args.repeat}:")
    _common.print_table(["eval", "documents scored", "seconds", "ms per document"], rows)
    print(f"\neval --run over {args.run_docs} images with the tiny model, then the same command again:")
    _common.print_table(["call", "seconds", "model loaded", "torch imported", "exit"],
                        run_benchmark(args.run_docs, args.repeat))


if __name__ == "__main__":
    main()
