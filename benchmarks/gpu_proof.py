"""The GPU proof in one command: what internvl-cli does on a CUDA machine, measured, in one JSON file and one
Markdown table.

Made for a GPU host with torch, transformers, nvcc and triton but no network, to which at most 64 MiB of files
can be brought: the few wheels it needs beyond those come from a local folder (`--wheels DIR`, installed with
`pip install --no-index --find-links DIR`), the project runs from this checkout (PYTHONPATH), and the
checkpoints are built here with random weights at InternVL3-2B's dimensions (benchmarks/gpu_awq.py). Steps, each
a subprocess with its own time limit, so one failure is recorded and the rest still run:

1. the wheels (`--wheels DIR`), or a check that they are importable;
2. `pytest -m gpu` (tests/test_gpu_cuda.py and the other GPU-only tests);
3. AWQ at InternVL3-2B dimensions through each kernel this machine allows (marlin, triton, torch) and bf16:
   Marlin's build (`doctor --warm`, timed), then load time cold (the checkpoints just written, first process)
   and cached (the same again), peak GPU memory, tokens/s and pages/s at 7 tiles per page (2x3 grid +
   thumbnail) with a fixed answer length;
4. `--awq-kernel auto` with nvcc hidden (PATH without it, no CUDA_HOME): expects triton and no compile;
5. an out-of-memory error forced with torch.cuda.set_per_process_memory_fraction: the batch is halved, and
   the memory still allocated when the retry starts (after the failed attempt was let go) is reported;
6. `internvl doctor --json`.

    python benchmarks/gpu_proof.py --wheels /path/to/wheels [--out DIR]
    python benchmarks/gpu_proof.py --dry-run          # the plan, on any machine (no torch import)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# Beyond torch, transformers, nvcc and triton (the GPU image's own), what the steps import: gptqmodel and what
# it imports at load (pypcre is a C extension: build its wheel for the host's Python, `pip wheel pypcre`), and
# internvl-cli's base dependencies a bare image lacks; ninja, without which torch's cpp_extension (and so the
# Marlin build) refuses to start. pytest is usually there; it is listed in case.
WHEELS = ("gptqmodel==7.6.0", "pypcre", "logbar", "device-smi", "tokenicer", "defuser", "threadpoolctl",
          "accelerate", "ninja", "pymupdf-lite", "pi-heif", "llguidance", "jsonschema", "typer", "pytest")
# module each wheel provides, for the check without --wheels
MODULES = {"gptqmodel==7.6.0": "gptqmodel", "pypcre": "pcre", "logbar": "logbar", "device-smi": "device_smi",
           "tokenicer": "tokenicer", "defuser": "defuser", "threadpoolctl": "threadpoolctl",
           "accelerate": "accelerate", "ninja": "ninja", "pymupdf-lite": "pymupdf", "pi-heif": "pi_heif",
           "llguidance": "llguidance", "jsonschema": "jsonschema", "typer": "typer", "pytest": "pytest"}
MAKE_WHEELS = ("on a machine with network and the GPU host's Python version: pip wheel --no-deps -w wheels "
               + " ".join(WHEELS) + "  (then check `du -sh wheels` is under 64 MiB)")

KERNELS = ("marlin", "triton", "torch")
PAGES, BATCH, ANSWER_TOKENS, MAX_TILES = 16, 8, 64, 6  # 6 tiles + thumbnail = 7 per A4 page


@dataclass
class Step:
    name: str
    command: list[str]
    limit_s: int
    expected_s: int
    env: dict[str, str | None] = field(default_factory=dict)  # None removes the variable
    rc: int | None = None
    seconds: float | None = None
    summary: str = ""
    figures: dict = field(default_factory=dict)


def gpu_awq(out: Path, json_name: str, variants: str, kernels: str) -> list[str]:
    return [sys.executable, str(BENCH / "gpu_awq.py"), "--variants", variants, "--awq-kernels", kernels,
            "--pages", str(PAGES), "--batch-size", str(BATCH), "--max-new-tokens", str(ANSWER_TOKENS),
            "--max-tiles", str(MAX_TILES), "--no-repetition-stop", "--json", str(out / json_name)]


def without_nvcc() -> dict[str, str | None]:
    """PATH without any folder holding nvcc, and no CUDA_HOME / CUDA_PATH: a machine without the toolkit."""
    folders = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "nvcc").exists()]
    return {"PATH": os.pathsep.join(folders), "CUDA_HOME": None, "CUDA_PATH": None}


def plan(args, kernels: tuple[str, ...]) -> list[Step]:
    out = args.out
    wheels = ([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(args.wheels),
               *WHEELS]
              if args.wheels else [sys.executable, __file__, "--check-imports"])
    kernel_list = ",".join(kernels)
    return [
        Step("wheels", wheels, 240, 30),
        Step("pytest -m gpu", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                               str(REPO / "tests")], 240, 60),
        *([Step("build marlin", [sys.executable, "-m", "internvl_cli.cli", "doctor", "--warm", "--awq-kernel",
                                 "marlin", "--json"], 360, 120)] if "marlin" in kernels else []),
        Step("kernels, cold load", gpu_awq(out, "cold.json", "bf16,awq", kernel_list), 420, 100),
        Step("kernels, cached load", gpu_awq(out, "cached.json", "bf16,awq", kernel_list), 240, 80),
        Step("auto with nvcc hidden", gpu_awq(out, "hidden.json", "awq", "auto"), 180, 25, env=without_nvcc()),
        Step("forced out-of-memory", [sys.executable, __file__, "--oom-probe", str(out / "oom.json")], 180, 30),
        Step("doctor --json", [sys.executable, "-m", "internvl_cli.cli", "doctor", "--json", "--pages", "5000"],
             60, 10),
    ]


def allowed_kernels() -> tuple[tuple[str, ...], dict[str, str]]:
    """The AWQ kernels this machine can run (the project's own choice, forced), and why the others cannot."""
    from internvl_cli.errors import InternVLError
    from internvl_cli.hardware.kernels import choose_awq_kernel
    from internvl_cli.hardware.machine import probe_machine

    machine = probe_machine(toolchain=True, cached_kernels=True)
    allowed, refused = [], {}
    for name in KERNELS:
        try:
            choose_awq_kernel(machine, "cuda", "float16", name)
        except InternVLError as error:
            if "compiled first" in error.message:  # marlin not built yet: the cold step builds it
                allowed.append(name)
            else:
                refused[name] = error.one_line()
        else:
            allowed.append(name)
    return tuple(allowed), refused


def run_step(step: Step, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    for key, value in step.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    started = time.perf_counter()
    try:
        done = subprocess.run(step.command, cwd=REPO, env=env, capture_output=True, text=True, timeout=step.limit_s)
        step.rc, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        step.rc, text = 124, f"{exc.stdout or ''}{exc.stderr or ''} (timed out after {step.limit_s} s)"
    step.seconds = round(time.perf_counter() - started, 1)
    slug = step.name.replace(" ", "_").replace("/", "_")
    (out / f"{slug}.log").write_text(text if isinstance(text, str) else str(text))
    lines = [line for line in str(text).splitlines() if line.strip()]
    step.summary = lines[-1][:300] if lines else ""


def read_figures(steps: list[Step], out: Path) -> None:
    by_name = {step.name: step for step in steps}
    for name, file in (("kernels, cold load", "cold.json"), ("kernels, cached load", "cached.json"),
                       ("auto with nvcc hidden", "hidden.json"), ("forced out-of-memory", "oom.json")):
        if (out / file).exists():
            by_name[name].figures = json.loads((out / file).read_text())
    doctor = by_name["doctor --json"]
    log = (out / "doctor_--json.log").read_text() if (out / "doctor_--json.log").exists() else ""
    if doctor.rc == 0 and "{" in log:
        try:  # stdout's JSON object comes first in the log, stderr after it
            doctor.figures = json.loads(log[log.index("{"):log.rindex("}") + 1])
        except ValueError:
            doctor.figures = {}
    hidden = by_name["auto with nvcc hidden"]
    rows = hidden.figures.get("rows", [])
    if rows:
        row = rows[0]
        expected = row["variant"] == "awq:triton" and row["built"] == "no"
        hidden.summary = (f"kernel {row['variant']}, build: {row['built']} "
                          f"({'as expected' if expected else 'NOT triton without a compile'})")


def markdown(steps: list[Step], refused: dict[str, str]) -> str:
    lines = ["| step | rc | seconds | result |", "|---|---:|---:|---|"]
    lines += [f"| {s.name} | {s.rc} | {s.seconds} | {s.summary.replace('|', '/')} |" for s in steps]
    by_name = {step.name: step for step in steps}
    rows = {}
    for step in (by_name["kernels, cold load"], by_name["kernels, cached load"]):
        for row in step.figures.get("rows", []):
            rows.setdefault(row["variant"], {})[step.name] = row
    if rows:
        lines += ["", "| variant (kernel) | load s cold | load s cached | kernel build | peak GB (run) | pages/s | "
                      "new tok/s |", "|---|---:|---:|---|---:|---:|---:|"]
        for variant, by_step in rows.items():
            cold, cached = by_step.get("kernels, cold load", {}), by_step.get("kernels, cached load", {})
            last = cached or cold
            rate = lambda r, key: f"{r[key] / r['seconds']:.2f}" if r else "-"  # noqa: E731
            lines.append(f"| {variant} | {cold.get('load_s', float('nan')):.1f} | "
                         f"{cached.get('load_s', float('nan')):.1f} | {cold.get('built', '-')} | "
                         f"{last.get('run_peak_gb') or float('nan'):.2f} | {rate(last, 'pages')} | "
                         f"{rate(last, 'new_tokens')} |")
    oom = by_name["forced out-of-memory"].figures
    if oom:
        lines += ["", f"Forced out-of-memory: {json.dumps(oom)}"]
    for name, why in refused.items():
        lines.append(f"\nkernel {name} not run here: {why}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the OOM probe (a subprocess)

def oom_probe(json_path: Path) -> None:
    """Loads the AWQ checkpoint gpu_awq.py built, caps this process's GPU memory a little above the weights,
    runs 16 pages in one batch and records the memory still allocated each time a retry starts."""
    sys.path[:0] = [str(BENCH), str(REPO), str(REPO / "tests")]
    import gpu_awq
    import torch

    import internvl_cli.engine.hf as hf
    from internvl_cli.engine import load_engine

    path = gpu_awq.variant_dir(BENCH / ".cache" / "gpu_awq", False, "awq", 128)
    engine = load_engine(str(path), device="cuda", awq_kernel="triton")
    engine.load()
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    headroom = 2 * 2**30  # a few pages fit, 16 pages of 7 tiles do not
    torch.cuda.set_per_process_memory_fraction(min(1.0, (weights + headroom) / total))
    held = []
    release = hf.release_gpu_memory

    def recording(device):
        release(device)
        held.append(round((torch.cuda.memory_allocated() - weights) / 2**30, 3))

    hf.release_gpu_memory = recording
    tiling = engine.tiling.with_limits(max_tiles=MAX_TILES)
    requests = gpu_awq.page_requests(0, 16, tiling, 32, True)
    error = None
    try:
        results = engine.generate(requests)
    except Exception as exc:  # recorded, not raised: the proof reports what happened
        results, error = [], f"{type(exc).__name__}: {exc}"[:300]
    json_path.write_text(json.dumps({
        "weights_gib": round(weights / 2**30, 3), "cap_gib": round((weights + headroom) / 2**30, 3),
        "retries": len(held), "allocated_beyond_weights_at_each_retry_gib": held,
        "pages_answered": len(results), "error": error,
        "ceiling_after": [engine._oom_ceiling.pages, engine._oom_ceiling.tiles],
    }, indent=2))


def check_imports() -> None:
    import importlib.util

    missing = [wheel for wheel, module in MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}; bring them with --wheels DIR ({MAKE_WHEELS})")
    print("all needed packages import")


# ----------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder of the wheels listed in --dry-run (pip --no-index)")
    parser.add_argument("--out", type=Path, default=BENCH / ".cache" / "gpu_proof",
                        help="where proof.json, proof.md and each step's log go (default benchmarks/.cache/gpu_proof)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (any machine)")
    parser.add_argument("--oom-probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--check-imports", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def print_plan(steps: list[Step]) -> None:
    print("GPU proof plan (each step a subprocess; one failing does not stop the others)")
    for number, step in enumerate(steps, 1):
        env = ", ".join(f"{k}={'unset' if v is None else '<PATH without nvcc>' if k == 'PATH' else v}"
                        for k, v in step.env.items())
        print(f"{number}. {step.name}: ~{step.expected_s} s expected, at most {step.limit_s} s"
              + (f" [{env}]" if env else ""))
        print("   " + " ".join(step.command))
    print(f"kernels: each of {', '.join(KERNELS)} that this machine allows, and bf16; {PAGES} pages of 7 tiles, "
          f"{BATCH} per batch, {ANSWER_TOKENS} answer tokens each")
    print(f"wheels needed beyond torch, transformers, nvcc and triton: {', '.join(WHEELS)}")
    print(f"make them: {MAKE_WHEELS}")
    print(f"expected duration: ~{sum(s.expected_s for s in steps) / 60:.1f} min on an H100-class GPU (estimate; "
          f"limits add up to {sum(s.limit_s for s in steps) / 60:.0f} min)")


def main() -> None:
    args = parse_args()
    if args.oom_probe:
        return oom_probe(args.oom_probe)
    if args.check_imports:
        return check_imports()
    if args.dry_run:
        print_plan(plan(args, KERNELS))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    steps = plan(args, KERNELS)
    run_step(steps[0], args.out)  # the wheels first: choosing kernels imports gptqmodel's checks
    sys.path[:0] = [str(REPO)]
    kernels, refused = allowed_kernels()
    steps[1:] = plan(args, kernels)[1:]
    for step in steps[1:]:
        print(f"{step.name} ...", file=sys.stderr, flush=True)
        run_step(step, args.out)
    read_figures(steps, args.out)
    (args.out / "proof.json").write_text(json.dumps({"steps": [asdict(s) for s in steps], "kernels_refused": refused},
                                                    indent=2, default=str))
    table = markdown(steps, refused)
    (args.out / "proof.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
