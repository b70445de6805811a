"""GPU memory and throughput (pages/s, generated tokens/s) of a real-size InternVL3-2B, bf16 vs. AWQ 4-bit, through internvl-cli's engine.

No model hub is needed: the checkpoints are built offline with RANDOM weights but the real architecture of
OpenGVLab/InternVL3-2B-hf (InternViT-300M, MLP projector, Qwen2.5-1.5B with an untied lm_head, ~2.1B
parameters), in two variants written once to the cache:

* bf16: every tensor bfloat16 (~4.2 GB);
* awq:  the language model's attention and MLP Linears quantized to 4 bits with the real AWQ GEMM packing
        (group 128, zero point), vision tower, projector, embeddings and lm_head float16, and the
        `quantization_config` block tests/tiny_awq.py writes (~2.2 GB, half of it the 16-bit embeddings
        and lm_head of the 151,674-token vocabulary).

Each variant is then loaded with `internvl_cli.engine.load_engine(...).load()` (so gptqmodel picks its AWQ
kernel exactly as in a real run) and given synthetic A4 pages, tiled by the project's `tile_image`, in
batches of --batch-size pages per `generate` call with greedy decoding. Recorded: the model's tensor bytes,
`torch.cuda.max_memory_allocated()` after loading and after the timed run, pages/s and generated tokens/s
(model time only: tiling happens outside the timer), and the AWQ kernel class gptqmodel chose.

Random weights mean the text is noise, and greedy decoding of noise often loops until the repetition
detector stops it (as it would in a real run), so pages/s depends on when that happens; generated tokens/s
is the comparable decode figure. --no-repetition-stop makes every row run to --max-new-tokens (or EOS).

Run on a GPU host:     python benchmarks/gpu_awq.py [--pages 32] [--batch-size 8] [--max-new-tokens 256]
CPU smoke test (tiny): python benchmarks/gpu_awq.py --tiny --device cpu
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import _common

_common.setup_paths()

# Bump when what the builder writes changes, so a stale cached checkpoint is never measured by mistake.
BUILD_VERSION = 1
SEED = 0
SHARD_BYTES = 2 * 1024**3  # keeps at most ~2 GB of built tensors in RAM per variant at any time
WARMUP_TOKENS = 8
PROMPT = "Convert this page to markdown."

# OpenGVLab/InternVL3-2B-hf: InternViT-300M-448px-V2.5 (qkv bias, no qk norm, layer norm) ...
REAL_VISION = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    image_size=[448, 448], patch_size=[14, 14], attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
    use_absolute_position_embeddings=True, layer_scale_init_value=0.1, layer_norm_eps=1e-6,
)
# ... and Qwen2.5-1.5B-Instruct. InternVL3-2B keeps its own lm_head (2.09B parameters in all; a tied one
# would make it 1.85B), and the vocabulary is Qwen's plus InternVL's image tokens.
REAL_TEXT = dict(
    vocab_size=151674, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
)

# transformers saves native InternVL checkpoints under the llava-style names (its conversion mapping renames
# them back at load time): runtime module prefix -> checkpoint prefix, most specific first.
CHECKPOINT_PREFIXES = (
    ("lm_head", "language_model.lm_head"),
    ("model.language_model", "language_model.model"),
    ("model.vision_tower", "vision_tower"),
    ("model.multi_modal_projector", "multi_modal_projector"),
)


# ----------------------------------------------------------------------------- configs


def model_config(tokenizer, tiny: bool):
    """The InternVL config to build: real InternVL3-2B dims, or tests/tiny_models.py's tiny ones."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config
    from tiny_models import tiny_config

    if tiny:
        config = tiny_config(tokenizer)
    else:
        # The tiny tokenizer's ids (image tokens, EOS, pad) all lie inside the real vocabulary size; the
        # ids it cannot decode are simply dropped from the text, which is noise anyway.
        text = Qwen2Config(**REAL_TEXT, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = InternVLConfig(
            vision_config=InternVLVisionConfig(**REAL_VISION).to_dict(), text_config=text.to_dict(),
            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
            image_seq_length=256, downsample_ratio=0.5, projector_hidden_act="gelu",
        )
        config.architectures = ["InternVLForConditionalGeneration"]
    # InternVLConfig ties lm_head to the embeddings by default; the real checkpoints carry their own.
    config.tie_word_embeddings = False
    config.text_config.tie_word_embeddings = False
    return config


def tensor_shapes(config) -> list[tuple[str, tuple[int, ...]]]:
    """(checkpoint name, shape) of every tensor the model saves, from a weightless model on the meta device."""
    import torch
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    shapes = [(checkpoint_name(name), tuple(t.shape)) for name, t in model.state_dict().items()]
    return sorted(shapes)


def checkpoint_name(runtime: str) -> str:
    for prefix, saved in CHECKPOINT_PREFIXES:
        if runtime == prefix or runtime.startswith(prefix + "."):
            return saved + runtime[len(prefix):]
    return runtime


# ----------------------------------------------------------------------------- random weights


def random_tensor(name: str, shape: tuple[int, ...], generator):
    """float32 values of the kind the layer would hold: small weights, unit norms, zero biases, 0.1 layer scale."""
    import torch

    if name.endswith(".bias"):
        return torch.zeros(shape)
    if re.search(r"\.lambda_[12]$", name):
        return torch.full(shape, 0.1)
    if name.endswith(".weight") and len(shape) == 1:  # LayerNorm / RMSNorm scales
        return torch.ones(shape)
    # std 0.02 (transformers' initializer_range) keeps activations far from float16's range.
    return torch.empty(shape).normal_(0.0, 0.02, generator=generator)


class ShardWriter:
    """Writes tensors into ~SHARD_BYTES safetensors shards plus the index transformers reads."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.pending: dict = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []

    def add(self, name: str, tensor) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= SHARD_BYTES:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        save_file(self.pending, self.out_dir / f"shard-{len(self.shards)}.tmp", metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> int:
        """Renames the shards to transformers' `-of-N` names now that N is known; returns the bytes written."""
        self._flush()
        count = len(self.shards)
        weight_map, total = {}, 0
        for index, names in enumerate(self.shards):
            final = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
            (self.out_dir / f"shard-{index}.tmp").replace(self.out_dir / final)
            total += (self.out_dir / final).stat().st_size
            weight_map.update(dict.fromkeys(names, final))
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
        return total


# ----------------------------------------------------------------------------- building


def variant_dir(cache: Path, tiny: bool, variant: str, group_size: int) -> Path:
    size = "tiny" if tiny else "internvl3-2b"
    suffix = f"awq-g{group_size}" if variant == "awq" else variant
    return cache / f"{size}-random-{suffix}-v{BUILD_VERSION}"


def build_missing(cache: Path, tiny: bool, variants: list[str], group_size: int) -> dict[str, Path]:
    """The checkpoint directory of each variant, building those not cached yet in one pass over the tensors.

    One pass means both variants share the same random float weights (the AWQ one is their quantization),
    and each tensor is generated, written and dropped in turn, so RAM stays near one shard per variant.
    """
    dirs = {v: variant_dir(cache, tiny, v, group_size) for v in variants}
    missing = {v: d for v, d in dirs.items() if not (d / "config.json").exists()}  # config.json is written last
    if missing:
        started = time.perf_counter()
        _build(missing, tiny, group_size)
        print(f"built {', '.join(missing)} in {time.perf_counter() - started:.0f} s under {cache}", file=sys.stderr)
    return dirs


def _build(targets: dict[str, Path], tiny: bool, group_size: int) -> None:
    import torch
    from tiny_awq import LM_LINEAR, pack_awq_gemm, quantize_weight
    from tiny_models import build_tokenizer

    tmp = {v: d.with_name(d.name + ".tmp") for v, d in targets.items()}
    for path in tmp.values():  # a build killed halfway leaves only a .tmp folder, never a cached name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    tokenizer = build_tokenizer(next(iter(tmp.values())))
    config = model_config(tokenizer, tiny)
    writers = {v: ShardWriter(path) for v, path in tmp.items()}
    generator = torch.Generator().manual_seed(SEED)
    for name, shape in tensor_shapes(config):
        weight = random_tensor(name, shape, generator)
        if "bf16" in writers:
            writers["bf16"].add(name, weight.to(torch.bfloat16))
        if "awq" in writers:
            if LM_LINEAR.match(name):
                prefix = name.removesuffix(".weight")
                for part, tensor in pack_awq_gemm(*quantize_weight(weight, group_size)).items():
                    writers["awq"].add(f"{prefix}.{part}", tensor)
            else:  # tests/tiny_awq.py's layout: everything that is not quantized is float16
                writers["awq"].add(name, weight.half())
    for variant, path in tmp.items():
        writers[variant].close()
        _write_side_files(path, tokenizer, config, variant, group_size)
        shutil.rmtree(targets[variant], ignore_errors=True)
        path.replace(targets[variant])


def _write_side_files(out_dir: Path, tokenizer, config, variant: str, group_size: int) -> None:
    """Tokenizer, preprocessor, chat template and generation config as the -hf checkpoints ship them; config last."""
    from tiny_awq import awq_quantization_config
    from tiny_models import CHAT_TEMPLATE, preprocessor_config
    from transformers import GenerationConfig

    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    data = config.to_dict()
    data["dtype"] = "bfloat16" if variant == "bf16" else "float16"
    if variant == "awq":
        data["quantization_config"] = awq_quantization_config(group_size)
    (out_dir / "config.json").write_text(json.dumps(data, indent=2))


# ----------------------------------------------------------------------------- synthetic pages


def synthetic_page(index: int):
    """An A4 page at 150 DPI: a heading, lines of word-like dark boxes, a ruled table and a noisy photo."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    width, height = 1240, 1754
    paper = rng.integers(240, 256, (height, width, 3), dtype=np.uint8)  # not flat white: scanner-like grain
    image = Image.fromarray(paper)
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 90, 100 + int(rng.integers(400, 900)), 130), fill=(20, 20, 20))
    y = 180
    while y < 900:  # text lines made of "words"
        x = 100
        while x < width - 180:
            word = int(rng.integers(20, 110))
            draw.rectangle((x, y, x + word, y + 14), fill=tuple(int(v) for v in rng.integers(0, 70, 3)))
            x += word + int(rng.integers(10, 18))
        y += int(rng.integers(26, 34))
    for row in range(13):  # a 5-column ruled table
        draw.line((100, 950 + row * 36, 800, 950 + row * 36), fill=(80, 80, 80), width=2)
    for col in range(6):
        draw.line((100 + col * 140, 950, 100 + col * 140, 1382), fill=(80, 80, 80), width=2)
    photo = rng.normal(128, 50, (300, 320, 3)).clip(0, 255).astype(np.uint8)
    image.paste(Image.fromarray(photo), (840, 960))
    return image


def page_requests(first: int, count: int, tiling, max_new_tokens: int, loop_stop: bool = True) -> list:
    from internvl_cli.engine import GenerationRequest, Sampling
    from internvl_cli.documents.tiling import tile_image
    from internvl_cli.decoding.repetition import LoopRule

    # greedy: do_sample defaults to False
    sampling = Sampling(max_new_tokens=max_new_tokens, loop=LoopRule() if loop_stop else LoopRule.off())
    return [
        GenerationRequest(images=[tile_image(synthetic_page(i), tiling)[1]], text=PROMPT, sampling=sampling)
        for i in range(first, first + count)
    ]


# ----------------------------------------------------------------------------- measuring


def measure(variant: str, path: Path, args, awq_kernel: str = "auto") -> dict:
    """Loads one variant through the project's engine (AWQ with `awq_kernel`), warms it up, then times --pages
    pages. The load time includes building a compiled kernel when its build was not cached yet."""
    import torch
    from internvl_cli.engine import load_engine

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(args.device)
    # bf16 explicitly: on CPU the engine would otherwise compute a plain checkpoint in float32.
    engine = load_engine(str(path), device=args.device, dtype="bfloat16" if variant == "bf16" else "auto",
                         awq_kernel=awq_kernel)
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    load_peak = torch.cuda.max_memory_allocated(args.device) / 1e9 if cuda else None
    tiling = engine.tiling.with_limits(max_tiles=args.max_tiles)
    generated = count_generated_tokens(engine.model)
    # Warm-up on other pages with a full batch: CUDA context, cuBLAS handles and the AWQ kernels'
    # first-call compilation/autotuning must not count as throughput.
    engine.generate(page_requests(10**6, args.batch_size, tiling, WARMUP_TOKENS, not args.no_repetition_stop))
    generated.clear()
    results, seconds, tiles = _timed_run(engine, tiling, args, torch, cuda)
    choice = getattr(engine, "kernel", None)
    label = variant if variant == "bf16" else f"awq:{choice.kernel.name if choice else awq_kernel}"
    return {
        "variant": label, "describe": engine.describe(), "weights_gb": tensor_bytes(engine.model) / 1e9,
        "built": "-" if choice is None else ("built" if choice.compile else "no"),
        "load_s": load_s, "load_peak_gb": load_peak,
        "run_peak_gb": torch.cuda.max_memory_allocated(args.device) / 1e9 if cuda else None,
        "seconds": seconds, "pages": len(results), "tiles": tiles,
        "new_tokens": sum(generated), "kept_tokens": sum(r.new_tokens for r in results),
        "finish": Counter(r.finish_reason for r in results), "kernel": kernel_classes(engine.model),
        "engine": engine,
    }


def _timed_run(engine, tiling, args, torch, cuda) -> tuple[list, float, int]:
    """Generates every page, batch by batch; only the generate calls are timed (tiling is not)."""
    results, seconds, tiles = [], 0.0, 0
    for first in range(0, args.pages, args.batch_size):
        batch = page_requests(first, min(args.batch_size, args.pages - first), tiling, args.max_new_tokens,
                              not args.no_repetition_stop)
        tiles += sum(r.tiles for r in batch)
        if cuda:
            torch.cuda.synchronize(args.device)
        started = time.perf_counter()
        results += engine.generate(batch)
        if cuda:
            torch.cuda.synchronize(args.device)
        seconds += time.perf_counter() - started
    return results, seconds, tiles


def count_generated_tokens(model) -> list[int]:
    """Wraps model.generate to record how many tokens each row generated before it stopped.

    The engine's results count only the text it keeps: a loop cut by the repetition detector is trimmed back
    to its first occurrence, which would hide most of the decoding work that random weights cause.
    A row that stopped is padded with pad_token_id while the rest of its batch goes on; those are not counted.
    """
    counts: list[int] = []
    original = model.generate

    def generate(*args, **kwargs):
        output = original(*args, **kwargs)
        new = output[:, kwargs["input_ids"].shape[1]:]
        pad = kwargs.get("pad_token_id")
        for row in new.tolist():
            while row and row[-1] == pad:
                row.pop()
            counts.append(len(row))
        return output

    model.generate = generate  # an instance attribute: only this benchmark's model is affected
    return counts


def tensor_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (packed AWQ weights are buffers), each storage once."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = (tensor.device, tensor.data_ptr())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def kernel_classes(model) -> str:
    """The gptqmodel QuantLinear class(es) that replaced the Linears, with counts; '-' for a plain model."""
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:
        return "-"
    counts = Counter(type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear))
    return ", ".join(f"{name} x{n}" for name, n in counts.items()) or "-"


def release(result: dict) -> None:
    """Drops a variant's model before the next loads, so each peak is its own."""
    import torch

    engine = result.pop("engine")
    engine.model = None
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- reporting


def report(results: list[dict], args) -> None:
    gb = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    rows = [
        [r["variant"], gb(r["weights_gb"]), gb(r["load_peak_gb"]), gb(r["run_peak_gb"]), f"{r['load_s']:.1f}",
         r["built"], f"{r['pages'] / r['seconds']:.3f}", f"{r['new_tokens'] / r['seconds']:.1f}", r["kernel"]]
        for r in results
    ]
    print()
    _common.print_table(["variant", "weights GB", "load peak GB", "run peak GB", "load s", "kernel build",
                         "pages/s", "new tok/s", "AWQ kernel class"], rows)
    print()
    for r in results:
        finish = ", ".join(f"{k} {v}" for k, v in sorted(r["finish"].items()))
        d = r["describe"]
        print(f"{r['variant']}: {d['device']} {d['dtype']}; {r['pages']} pages, {r['tiles']} tiles, "
              f"{r['new_tokens']} tokens generated ({r['new_tokens'] / r['pages']:.0f}/page, {r['kept_tokens']} kept "
              f"after loop trimming) in {r['seconds']:.1f} s; "
              f"finish: {finish}")
    if args.device == "cpu":
        print("peak GB columns are CUDA allocator figures: not measured on CPU")
    if any(r["built"] == "built" for r in results):
        print("'kernel build: built' rows include compiling that kernel (cold); run again for the cached load time")


def environment_line(args) -> str:
    import importlib.metadata as metadata

    import torch

    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    versions = []
    for package in ("torch", "transformers", "gptqmodel"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return f"{device}; " + ", ".join(versions)


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=_common.CACHE / "gpu_awq",
                        help="where the built checkpoints are kept (default benchmarks/.cache/gpu_awq; "
                        "the real-size pair takes ~6 GB)")
    parser.add_argument("--pages", type=int, help="pages to time (default 32; 4 with --tiny)")
    parser.add_argument("--batch-size", type=int, help="pages per generate call (default 8; 2 with --tiny)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per page, greedy (default 256)")
    parser.add_argument("--max-tiles", type=int, default=12, help="tile limit per page (default 12)")
    parser.add_argument("--variants", default="bf16,awq", help="comma-separated, from bf16,awq (default both)")
    parser.add_argument("--group-size", type=int, help="AWQ group size (default 128; 32 with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tests/tiny_models.py's tiny dims: a CPU smoke test")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--no-repetition-stop", action="store_true",
                        help="turn the engine's loop detector off, so rows run to --max-new-tokens (or EOS)")
    parser.add_argument("--rebuild", action="store_true", help="build the checkpoints again even if cached")
    parser.add_argument("--json", type=Path, dest="json_out",
                        help="also write the rows as JSON to this file (benchmarks/gpu_proof.py reads it)")
    parser.add_argument("--awq-kernels", default="auto",
                        help="comma-separated --awq-kernel values to measure the awq variant with, e.g. "
                        "auto,triton,marlin,torch (default auto: the one a run would choose)")
    args = parser.parse_args()
    args.pages = args.pages or (4 if args.tiny else 32)
    args.batch_size = args.batch_size or (2 if args.tiny else 8)
    # tiny hidden size 64 is not a multiple of 128; gptqmodel's CPU kernel needs groups of 32 or more.
    args.group_size = args.group_size or (32 if args.tiny else 128)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.awq_kernels = [k.strip() for k in args.awq_kernels.split(",") if k.strip()] or ["auto"]
    if min(args.pages, args.batch_size, args.max_new_tokens) < 1:
        parser.error("--pages, --batch-size and --max-new-tokens must be at least 1")
    unknown = set(args.variants) - {"bf16", "awq"}
    if unknown or not args.variants:
        parser.error(f"--variants takes bf16 and/or awq, got {args.variants}")
    return args


def check_device(args) -> None:
    """Fails early, before minutes of building, when the device or gptqmodel is not there."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU on this machine. "
                         "Run this on a GPU host, or smoke-test it here with: --tiny --device cpu")
    if "awq" in args.variants:
        from internvl_cli.hardware.awq import require_gptqmodel
        from internvl_cli.errors import ModelLoadError

        try:
            # Imported before CUDA starts, so gptqmodel's allocator settings apply to both variants alike.
            require_gptqmodel()
        except ModelLoadError as exc:
            raise SystemExit(exc.one_line()) from None


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network
    check_device(args)
    if args.rebuild:
        for variant in args.variants:
            shutil.rmtree(variant_dir(args.cache, args.tiny, variant, args.group_size), ignore_errors=True)
    dirs = build_missing(args.cache, args.tiny, args.variants, args.group_size)
    print(f"{'tiny' if args.tiny else 'InternVL3-2B-size'} random weights; {environment_line(args)}")
    print(f"{args.pages} pages (A4, <= {args.max_tiles} tiles), {args.batch_size} per generate call, "
          f"greedy, max {args.max_new_tokens} new tokens, repetition stop "
          f"{'off' if args.no_repetition_stop else 'on'}, AWQ group {args.group_size}")
    results = []
    for variant in args.variants:
        for kernel in args.awq_kernels if variant == "awq" else ["auto"]:
            result = measure(variant, dirs[variant], args, kernel)
            release(result)
            results.append(result)
            print(f"  {result['variant']}: {result['pages'] / result['seconds']:.3f} pages/s", file=sys.stderr)
    report(results, args)
    if args.json_out:
        rows = [{**r, "finish": dict(r["finish"])} for r in results]
        args.json_out.write_text(json.dumps({"environment": environment_line(args), "rows": rows}, indent=2,
                                            default=str))


if __name__ == "__main__":
    main()
