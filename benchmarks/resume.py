"""Resume overhead: how long a rerun of `internvl ocr DIR -o OUT` takes when all 1,000 documents are already done.

Steps: make 1,000 tiny distinct PNGs (64x64, one black pixel at a different place each), process them once
for real with the tiny random InternVL checkpoint of tests/tiny_models.py, then
* time the rerun end to end as a subprocess (`internvl -q ocr DIR -o OUT ...`, median of --repeat runs);
* rerun once more without -q and read the timestamps of its stderr notes (model load, if any, and planning);
* time the planning step alone in-process: discovery, content hashing, ledger decisions (DirectorySink.plan).

Run: /work/venv/bin/python benchmarks/resume.py [--docs 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

_common.setup_paths()


def make_docs(count: int) -> Path:
    """`count` distinct 64x64 PNGs in the cache (each differs by the position of one black pixel)."""
    from PIL import Image

    folder = _common.cache_dir() / f"resume-{count}-docs"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        path = folder / f"doc-{index:05d}.png"
        if not path.exists():
            image = Image.new("RGB", (64, 64), "white")
            image.putpixel((index % 64, (index // 64) % 64), (0, 0, 0))
            image.save(path)
    return folder


# ----------------------------------------------------------------------------- the CLI as a subprocess


def cli_command(docs: Path, out: Path, model: Path, quiet: bool) -> list[str]:
    # -q is a global option: it goes before the command name.
    command = [sys.executable, "-m", "internvl_cli.cli"] + (["-q"] if quiet else [])
    return command + ["ocr", str(docs), "-o", str(out), "--model", str(model), "--max-new-tokens", "1"]


def run_cli(command: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Wall seconds of the whole process and its stderr lines, each with the second it arrived."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=_common.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = [(time.perf_counter() - start, raw.decode(errors="replace").rstrip()) for raw in proc.stderr]
    code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"exit {code}: {' '.join(command)}\n" + "\n".join(text for _, text in lines[-20:]))
    return seconds, lines


def when(lines: list[tuple[float, str]], text: str) -> float | None:
    """The arrival time of the first stderr line containing `text` (None if it never came)."""
    return next((at for at, line in lines if text in line), None)


def model_load_seconds(lines: list[tuple[float, str]]) -> float | None:
    start, ready = when(lines, "loading model"), when(lines, "model ready")
    return ready - start if start is not None and ready is not None else None


def hash_throughput(repeat: int = 3) -> tuple[float, float]:
    """MB/s of content_hash on the 100-page test PDF (read from the page cache): the tiny PNGs here hash in
    microseconds, real documents cost their size divided by this."""
    from internvl_cli.runs.ledger import content_hash

    pdf = _common.generated_pdf(100)
    content_hash(pdf)  # warm the page cache, so this measures hashing rather than the disk
    start = time.perf_counter()
    for _ in range(repeat):
        content_hash(pdf)
    megabytes = pdf.stat().st_size / 1e6
    return repeat * megabytes / (time.perf_counter() - start), megabytes


def startup_floor() -> float:
    """Seconds for `internvl --version`: interpreter start plus the CLI's own imports, no work."""
    return run_cli([sys.executable, "-m", "internvl_cli.cli", "--version"])[0]


# ----------------------------------------------------------------------------- planning in-process


def plan_in_process(docs: Path, out: Path, model: Path) -> dict:
    """Discovery, hashing and ledger decisions exactly as a run does them, each timed (no weights loaded)."""
    from internvl_cli.engine import load_engine
    from internvl_cli.engine.base import Sampling
    from internvl_cli.documents.inputs import discover
    from internvl_cli.runs.ledger import Ledger, RunLock, content_hash
    from internvl_cli.tasks.ocr import OcrTask
    from internvl_cli.tasks.pagewise import PageOptions
    from internvl_cli.runs.writers import DirectorySink

    engine = load_engine(str(model), device="cpu")  # reads configs only: the task fingerprint needs its tiling
    options = PageOptions(tiling=engine.tiling.with_limits(None, None), sampling=Sampling(max_new_tokens=1))
    task = OcrTask(options, engine.model_id)
    times = {}
    start = time.perf_counter()
    found = discover([str(docs)], out_dir=out)
    times["discovery"] = time.perf_counter() - start
    start = time.perf_counter()
    for doc in found.docs:
        content_hash(doc.path)
    times["hashing only"] = time.perf_counter() - start
    with RunLock(out), Ledger.open(out) as ledger:
        sink = DirectorySink(ledger, task.fingerprint(), ".md")
        start = time.perf_counter()
        plan = sink.plan(found.docs)
        times["plan (hash + ledger decision + mark_seen)"] = time.perf_counter() - start
    if plan.todo or len(plan.skipped) != len(found.docs):
        # A fingerprint that differs from the CLI's would redo everything: then this figure means nothing.
        raise SystemExit(f"planning would redo {len(plan.todo)} documents: the task fingerprint drifted from the CLI's")
    return {"docs": len(found.docs), "times": times}


# ----------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents in the folder (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed reruns; the median is shown (default 3)")
    args = parser.parse_args()

    note = _common.machine_note()
    docs, model = make_docs(args.docs), _common.tiny_checkpoint()
    with tempfile.TemporaryDirectory(prefix="internvl-resume-") as tmp:
        out = Path(tmp) / "out"
        first = run_cli(cli_command(docs, out, model, quiet=False))  # not -q: its notes are timed
        done = sum(1 for _ in out.rglob("*.md"))
        if done != args.docs:
            raise SystemExit(f"the first run wrote {done} outputs for {args.docs} documents")
        reruns = [run_cli(cli_command(docs, out, model, quiet=True))[0] for _ in range(args.repeat)]
        annotated = run_cli(cli_command(docs, out, model, quiet=False))[1]
        planning = plan_in_process(docs, out, model)
    print(f"resume overhead, {args.docs} tiny PNG documents, all done by the first run; {note}\n")
    _common.print_table(["step", "seconds", "ms/doc"], table(args.docs, first, reruns, annotated, planning))
    print(f"\nreruns: {', '.join(f'{s:.2f}' for s in reruns)} s")
    rate, megabytes = hash_throughput()
    print(f"content_hash throughput: {rate:.0f} MB/s (a {megabytes:.1f} MB PDF from the page cache); "
          "real documents add their size / this to every rerun")
    if model_load_seconds(annotated) is None:
        print("the rerun loaded no model: a run plans before loading, and there was nothing to do")


def table(count: int, first, reruns: list[float], annotated, planning: dict) -> list[list[object]]:
    first_s, first_lines = first
    rerun, rerun_load = statistics.median(reruns), model_load_seconds(annotated)
    rows = [
        ["first run (processes every document)", f"{first_s:.2f}", f"{1000 * first_s / count:.2f}"],
        ["  of which model load (stderr notes)", _seconds(model_load_seconds(first_lines)), ""],
        [f"rerun, all done, end to end (median of {len(reruns)})", f"{rerun:.2f}", f"{1000 * rerun / count:.2f}"],
        ["  model load in the rerun", "none" if rerun_load is None else _seconds(rerun_load), ""],
        ["  'already done' note printed at", _seconds(when(annotated, "already done")), ""],
        ["  CLI start-up floor (internvl --version)", f"{startup_floor():.2f}", ""],
    ]
    for name, seconds in planning["times"].items():
        rows.append([f"in-process: {name}", f"{seconds:.3f}", f"{1000 * seconds / planning['docs']:.3f}"])
    return rows


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
