"""Quantize step: a 4-bit AWQ (GEMM) copy of a native InternVL checkpoint, language model only, made with gptqmodel.

The vision tower, the projector and lm_head stay 16-bit. Calibration runs each image through the product's own
tiling and prompt (tiling.py, models/prompting.py), so the activations AWQ scales for are the ones seen in use.

Cost, ESTIMATES only (not measured here; no GPU was available when this was written), for 64 calibration
pages at 6 tiles on one recent GPU: InternVL3-1B ~5 min and <8 GB GPU memory; -2B ~10 min, <12 GB;
-8B ~30-45 min, <24 GB. gptqmodel quantizes one decoder layer at a time and offloads finished layers to a temp
dir on disk, so host memory peaks near the checkpoint's 16-bit size (plus ~2 GB) and the temp dir needs about
as much free disk.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from typing import TYPE_CHECKING

from ..hardware.awq import RUNTIME_SKIPS, gptqmodel_output_to_stderr, require_gptqmodel
from .config import read_checkpoint_config
from ..errors import DeviceError, InputFileError, ModelLoadError, OutputError, UsageError

if TYPE_CHECKING:  # heavy imports, only for annotations
    from transformers import BatchFeature

DEFAULT_PROMPT = "Transcribe all the text on this page in reading order."
# Files a checkpoint needs beside the weights; gptqmodel's save writes some of them, the rest are copied.
AUX_FILES = (
    "preprocessor_config.json", "processor_config.json", "chat_template.jinja", "chat_template.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt",
)


def quantize_to_awq(src: Path, dst: Path, calibration_images: list[Path], *, group_size: int = 128,
                    max_tiles: int = 6, prompt: str = DEFAULT_PROMPT, device: str = "cuda") -> Path:
    """Write the AWQ checkpoint of `src` (native -hf InternVL, 16-bit) to `dst`; returns `dst`.

    Needs a CUDA GPU: AWQ's scale search runs every calibration page through each layer many times.
    Raises ModelLoadError (no CUDA, no gptqmodel, wrong source), UsageError (bad arguments, non-empty dst)
    or InputFileError (an unreadable calibration image).
    """
    _require_cuda(device)
    return _quantize(Path(src), Path(dst), calibration_images, group_size=group_size, max_tiles=max_tiles,
                     prompt=prompt, device=device)


def _quantize(src: Path, dst: Path, calibration_images: list[Path], *, group_size: int, max_tiles: int,
              prompt: str, device: str) -> Path:
    """The work of quantize_to_awq on any device (tests run it on CPU with a tiny checkpoint)."""
    config = _check_source(src)
    _check_arguments(config, dst, calibration_images, group_size, max_tiles)
    require_gptqmodel()
    import torch

    # gptqmodel sizes a 2-worker loader pool inside a CPU pool of (cores+1)//2: on 2-3 cores that fails.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 1) // 2)))
    with gptqmodel_output_to_stderr(), _gptqmodel_logs_elsewhere():
        from gptqmodel import AWQConfig
        from gptqmodel.utils.backend import BACKEND

        qmodel = _quantizer_class().from_pretrained(
            pretrained_model_id_or_path=str(src),
            # zero point (sym=False) and GEMM packing: the AWQ layout transformers, vLLM and LMDeploy read.
            quantize_config=AWQConfig(bits=4, group_size=group_size, sym=False),
            device=device,
            # float16: AWQ checkpoints carry float16 scales, and the CUDA AWQ kernels compute in float16.
            dtype=torch.float16,
        )
        qmodel.calibration_tiling = (src, max_tiles)
        calibration = [_conversation(Path(p), prompt) for p in calibration_images]
        # Packing with the portable torch kernel avoids the CUDA AWQ extension, which needs nvcc to JIT-compile;
        # the packed GEMM tensors are the same whichever kernel packs them.
        qmodel.quantize(calibration, batch_size=1, backend=BACKEND.AWQ_TORCH)
        qmodel.save(str(dst))
    _finish_checkpoint(src, dst)
    return dst


@contextlib.contextmanager
def _gptqmodel_logs_elsewhere():
    """gptqmodel writes per-layer logs into ./logs of whatever folder it runs in (the user's, or the repository
    under the test suite). They go to the cache instead (`$INTERNVL_CLI_CACHE/quantize-logs/`), kept for
    inspection; not a temporary folder, because gptqmodel appends to them from a worker thread."""
    try:
        from gptqmodel.looper import loop_processor
    except ImportError:  # require_gptqmodel has said what to install
        yield
        return
    root = os.environ.get("INTERNVL_CLI_CACHE")
    folder = (Path(root).expanduser() if root else Path.home() / ".cache" / "internvl-cli") / "quantize-logs"
    previous = getattr(loop_processor, "_PROJECT_LOG_DIR", None)
    loop_processor._PROJECT_LOG_DIR = folder
    try:
        yield
    finally:
        if previous is not None:
            loop_processor._PROJECT_LOG_DIR = previous


def _require_cuda(device: str) -> None:
    import torch

    if not device.startswith("cuda"):
        raise DeviceError(f"quantizing needs a CUDA GPU, not --device {device}",
                          hint="run `internvl quantize` on a machine with an NVIDIA GPU")
    if not torch.cuda.is_available():
        raise DeviceError("quantizing needs a CUDA GPU and torch sees none",
                          hint="run `internvl quantize` on a machine with an NVIDIA GPU and a CUDA build of torch")


def _check_source(src: Path) -> dict:
    """config.json of a native, not yet quantized InternVL checkpoint."""
    config = read_checkpoint_config(src)
    if config.get("model_type") != "internvl":
        raise ModelLoadError(f"model_type '{config.get('model_type')}' is not the native InternVL layout", path=src,
                             hint="convert it first with `internvl convert SRC DST`")
    if config.get("quantization_config"):
        raise ModelLoadError("the checkpoint is already quantized", path=src, hint="quantize a 16-bit checkpoint")
    return config


def _check_arguments(config: dict, dst: Path, images: list[Path], group_size: int, max_tiles: int) -> None:
    text = config.get("text_config") or {}
    widths = [text.get("hidden_size"), text.get("intermediate_size")]
    if group_size not in (32, 64, 128) or any(w and w % group_size for w in widths):
        raise UsageError(f"group size {group_size} must be 32, 64 or 128 and divide the widths {widths}")
    if not 1 <= max_tiles <= 12:
        raise UsageError("calibration max tiles must be between 1 and 12")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise OutputError("the destination is not empty", path=dst, hint="pass a new output directory")
    if not images:
        raise UsageError("quantizing needs calibration images (a few dozen pages like the ones you will read)")
    for image in images:
        _check_image(Path(image))


def _check_image(path: Path) -> None:
    """Fail before the model loads (minutes) rather than midway through calibration."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputFileError("calibration image not found", path=path)
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise InputFileError(f"cannot read the calibration image ({exc})", path=path) from None


def _conversation(image: Path, prompt: str) -> list[dict]:
    """One calibration sample as gptqmodel hands it to the processor: a user turn with the image and the prompt."""
    return [{"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": prompt}]}]


def _quantizer_class():
    """gptqmodel's InternVL definition with our processor: its own uses AutoProcessor, which needs torchvision."""
    from gptqmodel.models.definitions.internvl import InternVLQModel

    class InternVLCalibration(InternVLQModel):
        require_load_processor = False
        calibration_tiling: tuple[Path, int]

        def load_processor(self):
            return CalibrationProcessor(*self.calibration_tiling)

    return InternVLCalibration


class CalibrationProcessor:
    """Stands in for InternVLProcessor in gptqmodel: prompt and tiles exactly as the product builds them."""

    def __init__(self, checkpoint: Path, max_tiles: int):
        from transformers import AutoTokenizer

        from ..documents.tiling import TilingConfig

        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        pre_path = checkpoint / "preprocessor_config.json"
        pre = json.loads(pre_path.read_text(encoding="utf-8")) if pre_path.is_file() else {}
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if not getattr(self.tokenizer, "chat_template", None) and (checkpoint / "chat_template.jinja").is_file():
            self.tokenizer.chat_template = (checkpoint / "chat_template.jinja").read_text(encoding="utf-8")
        tiling = TilingConfig.from_preprocessor_config(pre, int(config.get("image_seq_length", 256)))
        self.tiling = tiling.with_limits(max_tiles=max_tiles, min_tiles=min(tiling.min_tiles, max_tiles))

    def apply_chat_template(self, conversations: list[list[dict]], **_ignored) -> BatchFeature:
        """input_ids, attention_mask and pixel_values for one conversation (gptqmodel batches InternVL by 1)."""
        import torch
        from transformers import BatchFeature

        from .prompting import build_prompt
        from ..documents.tiling import tile_image

        if len(conversations) != 1:
            raise ValueError("InternVL calibration takes one conversation per batch")
        image_path, text = _image_and_text(conversations[0])
        _, tiles = tile_image(_open_rgb(image_path), self.tiling)
        prompt = build_prompt(self.tokenizer, text, [tiles.shape[0]], self.tiling.image_seq_length)
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        return BatchFeature({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                             "pixel_values": torch.from_numpy(tiles)})


def _image_and_text(conversation: list[dict]) -> tuple[Path, str]:
    content = conversation[0]["content"]
    image = next(part["image"] for part in content if part.get("type") == "image")
    text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return Path(image), text


def _open_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputFileError(f"cannot read the calibration image ({exc})", path=path) from None


def _finish_checkpoint(src: Path, dst: Path) -> None:
    """Name the 16-bit modules for transformers and copy what gptqmodel's save leaves out."""
    path = dst / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    block = config.get("quantization_config") or {}
    # gptqmodel writes no modules_to_not_convert; transformers would then swap the vision tower's Linears
    # for empty AWQ layers on load and produce NaN.
    block["modules_to_not_convert"] = list(RUNTIME_SKIPS)
    # The temp offload dir is meaningless once the run is over.
    (block.get("meta") or {}).pop("offload_to_disk_path", None)
    config["quantization_config"] = block
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in AUX_FILES:
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)
    # gptqmodel "auto-fixes" the generation config on load (it saved do_sample=true for a greedy source);
    # the source's decoding defaults are the ones its authors evaluated with.
    if (src / "generation_config.json").is_file():
        shutil.copy2(src / "generation_config.json", dst / "generation_config.json")
