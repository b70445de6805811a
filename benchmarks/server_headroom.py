"""Client headroom of `--engine server`: pages/s and CPU seconds per page that one internvl process sustains
against an instant OpenAI-compatible server on 127.0.0.1 (benchmarks/_fake_openai.py), so the figure is the
client's ceiling (render, encode, HTTP, bookkeeping), not a model's speed. The code of a base commit (checked
out with `git archive` into a temporary folder) and this checkout run interleaved in one run, as subprocesses
`internvl ocr DIR -o OUT --engine server`; CPU is each subprocess's own plus its descendants' (os.wait4; this
process adopts their orphans), so render workers and their fork server are counted. Then one run of each under
cProfile (all threads) says where the CPU goes."""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cache_dir, generated_pdf, machine_note, print_table
from _fake_openai import MODEL, FakeServer

BASE_COMMIT = "0736b86"
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def base_checkout(commit: str) -> Path:
    """The package as it was at `commit`, extracted once into the cache."""
    target = cache_dir() / f"base-{commit}"
    if not (target / "internvl_cli").exists():
        tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "internvl_cli", "prompts", "schemas"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.replace(target)
    return target


def input_folder(documents: int, pages: int) -> Path:
    """`documents` copies of a generated `pages`-page PDF (A4 text, a table, a logo, a photo per page)."""
    folder = cache_dir() / f"headroom-{documents}x{pages}"
    if not folder.exists():
        source = generated_pdf(pages)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
        for index in range(documents):
            shutil.copyfile(source, tmp / f"doc-{index:03d}.pdf")
        tmp.replace(folder)
    return folder


def check_imports_from(code: Path) -> None:
    """Fails unless a client started as run_client starts it imports the package from `code`."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    found = subprocess.run([sys.executable, "-c", "import internvl_cli; print(internvl_cli.__file__)"], env=env,
                           cwd=code, check=True, capture_output=True, text=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"a client meant to run {code} imports {found}")


def adopt_orphans() -> None:
    """Makes this process the reaper of its clients' orphans (Linux): a run's render workers are forked by a fork
    server that outlives the run by a moment, so only here can its CPU (its workers' included) be counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


def reap_orphans() -> float:
    """CPU seconds of the orphans left by the run that just ended, once they have all ended."""
    cpu = 0.0
    while True:
        try:
            _, _, usage = os.wait4(-1, 0)
        except ChildProcessError:
            return cpu
        cpu += usage.ru_utime + usage.ru_stime


def run_client(code: Path, inputs: Path, server: str, extra: list[str], concurrency: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the client and its children, exit code) of one fresh run."""
    out = Path(tempfile.mkdtemp(prefix="headroom-out-"))
    env = {**os.environ, "PYTHONPATH": str(code), "INTERNVL_REQUIRE_VLLM": "0"}
    command = [sys.executable, "-m", "internvl_cli.cli", "-q", "ocr", str(inputs), "-o", str(out / "o"),
               "--engine", "server", "--server", server, "--model", MODEL, "--concurrency", str(concurrency), *extra]
    started = time.perf_counter()
    # cwd is the code's own folder: `python -m` puts the working directory first on sys.path, so started from
    # this checkout every variant would import this checkout's package whatever PYTHONPATH says.
    process = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    cpu = usage.ru_utime + usage.ru_stime + reap_orphans()
    stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
    code_ = os.waitstatus_to_exitcode(status)
    if code_ != 0:
        print(f"  exit {code_}: {stderr.strip()[-500:]}", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    return wall, cpu, code_


def profile(code: Path, inputs: Path, server: str, extra: list[str], top: int) -> str:
    out = Path(tempfile.mkdtemp(prefix="headroom-prof-"))
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{REPO / 'benchmarks'}", "INTERNVL_REQUIRE_VLLM": "0"}
    command = [sys.executable, str(REPO / "benchmarks" / "_profiled.py"), str(top), "-q", "ocr", str(inputs),
               "-o", str(out / "o"), "--engine", "server", "--server", server, "--model", MODEL, *extra]
    result = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    return result.stdout + (result.stderr[-500:] if result.returncode not in (0, 1) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=10, help="PDFs in the input folder (10)")
    parser.add_argument("--pages", type=int, default=50, help="pages per PDF (50): 500 pages in all")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all variants, interleaved (1)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--base", default=BASE_COMMIT, help=f"the commit to compare with ({BASE_COMMIT})")
    parser.add_argument("--workers", default="1,2", help="render worker counts of this checkout (1,2)")
    parser.add_argument("--profile-pages", type=int, default=100, help="pages of the profiled runs (0: none)")
    args = parser.parse_args()

    adopt_orphans()
    inputs = input_folder(args.documents, args.pages)
    total = args.documents * args.pages
    base = base_checkout(args.base)
    variants = [(f"base {args.base}", base, [])]
    variants += [(f"this checkout, {n} render worker{'s' if n != '1' else ''}", REPO, ["--render-workers", n])
                 for n in args.workers.split(",") if n]
    print(f"# {machine_note()}; {total} pages ({args.documents} PDFs x {args.pages}), --concurrency {args.concurrency}")
    for _, code, _ in variants:
        check_imports_from(code)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    with FakeServer() as server:
        run_client(base, inputs, server.url, ["--pages", "1"], args.concurrency)  # warm the page cache
        for _ in range(args.repeat):
            for name, code, extra in variants:
                before = server.received_bytes
                wall, cpu, status = run_client(code, inputs, server.url, extra, args.concurrency)
                figures[name].append((wall, cpu))
                print(f"  {name}: {total / wall:.1f} pages/s, {cpu / total * 1000:.1f} ms CPU/page, "
                      f"{(server.received_bytes - before) / total / 1e6:.2f} MB/page sent, exit {status}", flush=True)
        rows = []
        base_rate = None
        for name, _, _ in variants:
            wall = min(w for w, _ in figures[name])
            cpu = min(c for _, c in figures[name])
            rate = total / wall
            base_rate = base_rate or rate
            rows.append([name, f"{rate:.1f}", f"{cpu / total * 1000:.1f}", f"{rate / base_rate:.2f}x"])
        print()
        print_table(["client", "pages/s", "CPU ms/page", "vs base"], rows)
        if args.profile_pages:
            few = input_folder(max(1, args.profile_pages // args.pages), min(args.pages, args.profile_pages))
            for name, code, extra in variants[:1] + variants[-1:]:
                print(f"\n## where the CPU goes: {name} (cProfile, own time, every thread of the main process;"
                      f" {args.profile_pages} pages)")
                print(profile(code, few, server.url, extra, 12))


if __name__ == "__main__":
    main()
