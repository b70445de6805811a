"""Keeping third-party chatter (gptqmodel's banner and notices, torchao's load failures, torch's
and transformers' warnings) off stderr and stdout unless verbose output was asked for.

Nothing here imports torch; the switches are set before the engines import their libraries, so messages printed
at import time are silenced too. Our own notes go through the `internvl_cli` logger, which the CLI prints.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Loggers of libraries the engines import, and the level below which they stay silent when not verbose.
THIRD_PARTY_LOGGERS = ("torch", "torchao", "transformers", "accelerate", "huggingface_hub", "triton", "datasets",
                       "tokenicer", "defuser", "device_smi")
# gptqmodel's own notices at import (a GIL advice on every run); honoured since gptqmodel 5.x.
QUIET_ENV = {"GPTQMODEL_DISABLE_GIL_WARNING": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
_WARNING_MODULES = r"(torch|torchao|transformers|accelerate|gptqmodel|logbar|tokenicer|defuser|triton)(\.|$)"

_state = {"verbose": False, "applied": False}

log = logging.getLogger("internvl_cli")


def set_third_party_verbose(verbose: bool) -> None:
    """`internvl -v`: let libraries print what they print (their stdout still goes to stderr)."""
    _state["verbose"] = bool(verbose)
    _state["applied"] = False


def quiet_third_party() -> None:
    """Silence the libraries' banners and warnings for this process (a no-op when verbose).

    Call before importing torch, transformers or gptqmodel (some of them speak at import time), and again
    between those imports: torch sets up its own loggers when imported, and torchao (which gptqmodel imports)
    logs through them.
    """
    if _state["verbose"]:
        return
    if not _state["applied"]:
        _state["applied"] = True
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        warnings.filterwarnings("ignore", module=_WARNING_MODULES)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "torch" in sys.modules:
        _quiet_torch_logging()
    if "logbar" in sys.modules:
        quiet_logbar()


def quiet_imported_libraries() -> None:
    """After torch/transformers/gptqmodel are imported: the levels their own setup code reset."""
    if _state["verbose"]:
        return
    quiet_third_party()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # transformers absent or changed: nothing to quiet
        pass


def _quiet_torch_logging() -> None:
    # torch configures its "torch" logger tree itself (torch._logging); its child loggers such as
    # torch.utils._pytree keep their own levels, so set the parent's after import as well.
    for name in ("torch", "torch.utils._pytree", "torch._dynamo", "torch._inductor"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_logbar() -> None:
    """gptqmodel logs through LogBar (a logging.Logger named "logbar" that writes to stdout): banner, kernel
    choices, environment notices. Keep only errors; call before importing gptqmodel, whose banner comes then."""
    if _state["verbose"]:
        return
    try:
        from logbar import LogBar
    except Exception:  # gptqmodel not installed: nothing to quiet
        return
    try:
        LogBar.shared().setLevel(logging.ERROR)
    except Exception:  # a LogBar without this API must not stop a model from loading
        pass


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Libraries that print to stdout (LogBar does) would mix into our results: send it to stderr meanwhile."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
