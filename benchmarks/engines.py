"""Pages/s of one OCR workload through the hf and vllm engines, side by side in one run, and their ratio.

Workload: `--pages` synthetic pages of mixed sizes (A4 portrait and landscape, receipts, slides, squares:
1 to 13 tiles), the OCR prompt, greedy decoding with answers forced to exactly `--answer-tokens` tokens
(EOS ignored is not available through the engine API, so loop detection is switched off and the random
model's answers run to the budget; the generated token count is printed to show it). Each engine is
warmed up on 2 pages, then the pages go through its `stream` exactly as a run feeds them (hf: static
batches of --batch-size sorted by tiles; vllm: continuous batching over its window).

CPU (default): the tiny random checkpoint of tests/tiny_models.py with text head size 32 (vLLM's CPU
attention needs it). GPU: `--size internvl3-2b --device cuda` builds random weights at InternVL3-2B's real
dimensions (benchmarks/gpu_awq.py's builder, bf16) and runs both engines on them.

    python benchmarks/engines.py                       # this CPU, tiny model
    python benchmarks/engines.py --size internvl3-2b --device cuda --pages 256 --answer-tokens 500
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import _common

_common.setup_paths()
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

SIZES = [(1240, 1754), (1754, 1240), (600, 1600), (1920, 1080), (900, 900), (448, 448), (1000, 1400)]


def checkpoint(size: str) -> Path:
    if size == "tiny":
        path = _common.cache_dir() / "engines-tiny32"
        if not (path / "config.json").exists():
            from tiny_models import build_tiny_native

            build_tiny_native(path, text_head_dim=32)
        return path
    import gpu_awq

    return gpu_awq.build_missing(_common.cache_dir() / "gpu_awq", tiny=False, variants=["bf16"], group_size=128)["bf16"]


def workload(pages: int, tiling, answer_tokens: int) -> list:
    import numpy as np
    from PIL import Image

    from internvl_cli.documents.tiling import prepare_image
    from internvl_cli.engine import GenerationRequest, Sampling
    from internvl_cli.decoding.repetition import LoopRule
    from internvl_cli.resources import read_prompt

    prompt = read_prompt("ocr")
    requests = []
    for index in range(pages):
        width, height = SIZES[index % len(SIZES)]
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        requests.append(GenerationRequest(images=[prepare_image(Image.fromarray(pixels), tiling)], text=prompt,
                                          sampling=Sampling(max_new_tokens=answer_tokens,
                                                            loop=LoopRule.off())))  # same work everywhere
    return requests


def run(engine, requests: list, limits) -> tuple[float, int]:
    from internvl_cli.engine.batching import ListSource

    started = time.perf_counter()
    tokens = 0
    for _, outcome in engine.stream(ListSource(enumerate(requests)), limits):
        tokens += outcome.new_tokens
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="hf engine's static batch (default 8)")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="vllm's continuous batch (default: vLLM's)")
    parser.add_argument("--size", choices=("tiny", "internvl3-2b"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", default="hf,vllm")
    args = parser.parse_args()

    from internvl_cli.engine.base import BatchLimits
    from internvl_cli.engine.hf import TransformersEngine
    from internvl_cli.models.info import CheckpointInfo

    path = checkpoint(args.size)
    info = CheckpointInfo.read(path, path.name)
    limits = BatchLimits(batch_size=args.batch_size, max_tiles=args.batch_size * 13)
    rows = []
    for name in args.engines.split(","):
        if name == "hf":
            engine = TransformersEngine(info, device=args.device)
        else:
            from internvl_cli.engine.vllm import VllmEngine

            engine = VllmEngine(info, max_num_seqs=args.max_num_seqs)
        loaded = time.perf_counter()
        engine.load()
        load_seconds = time.perf_counter() - loaded
        requests = workload(args.pages, engine.tiling, args.answer_tokens)
        run(engine, workload(2, engine.tiling, args.answer_tokens), limits)  # warm-up
        seconds, tokens = run(engine, requests, limits)
        rows.append((name, args.pages / seconds, tokens / seconds, tokens, seconds, load_seconds))
        del engine

    tiles = sum(r.tiles for r in workload(args.pages, info.tiling, 1))
    print(f"{args.pages} pages ({tiles} tiles, sizes {len(SIZES)} kinds), {args.answer_tokens} answer tokens each, "
          f"model {args.size}, device {args.device}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'engine':<8}{'pages/s':>10}{'tokens/s':>12}{'tokens':>9}{'seconds':>10}{'load s':>9}")
    for name, pages_s, tokens_s, tokens, seconds, load_seconds in rows:
        print(f"{name:<8}{pages_s:>10.2f}{tokens_s:>12.1f}{tokens:>9}{seconds:>10.1f}{load_seconds:>9.1f}")
    if len(rows) == 2:
        print(f"ratio {rows[1][0]}/{rows[0][0]}: {rows[1][1] / rows[0][1]:.2f}x pages/s")


if __name__ == "__main__":  # vLLM spawns processes: the guard keeps them from rerunning this script
    main()
