"""AWQ through the kernel the engine chose (never gptqmodel's own selector), building a compiled kernel with a note,
progress and a fallback, `--awq-kernel`, quiet runs, and commands that import only what they use."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

import tiny_awq
from conftest import REPO, SAMPLES
from internvl_cli.hardware import awq
from internvl_cli.hardware.kernels import KERNELS, KernelChoice
from internvl_cli.errors import ModelLoadError

needs_gptqmodel = pytest.mark.skipif(__import__("importlib").util.find_spec("gptqmodel") is None,
                                     reason="gptqmodel not installed (the awq extra)")


@pytest.fixture(scope="module")
def awq_dir(tmp_path_factory):
    return tiny_awq.build_tiny_native_awq(tmp_path_factory.mktemp("awq") / "tiny-awq", seed=0, group_size=32)


def _kernels(model) -> set[str]:
    return {type(model.get_submodule(name)).__name__ for name in awq.quantized_module_names(model)}


# -- the engine on the CPU -----------------------------------------------------------------------------


@needs_gptqmodel
@pytest.mark.parametrize("forced, expected", [("auto", "cpu-int4"), ("torch", "torch")])
def test_the_engine_runs_the_tiny_awq_model_through_the_kernel_it_chose(awq_dir, forced, expected):
    from internvl_cli.engine import load_engine
    from internvl_cli.engine.base import GenerationRequest, Sampling

    engine = load_engine(str(awq_dir), device="auto", awq_kernel=forced)
    engine.load()
    assert engine.kernel.kernel.name == expected and engine.describe()["awq_kernel"] == expected
    assert _kernels(engine.model) == {KERNELS[expected].label}
    assert engine.describe()["attention"] == "sdpa" and engine.batch_limits().pages == 8
    import numpy as np

    tiles = np.random.default_rng(0).standard_normal((2, 3, 448, 448)).astype("float32")
    [result] = engine.generate([GenerationRequest([tiles], "Read the page.", Sampling(max_new_tokens=6))])
    assert result.new_tokens > 0 and result.image_tokens == 512


def test_a_cuda_kernel_forced_on_the_cpu_fails_before_loading(cli, awq_dir):
    code, out, err = cli("ocr", SAMPLES / "chart.png", "--model", awq_dir, "--awq-kernel", "marlin")
    assert code == 6 and out == "" and "--awq-kernel marlin runs on CUDA GPUs only" in err


def test_an_unknown_kernel_is_refused(cli, awq_dir):
    code, _, err = cli("ocr", SAMPLES / "chart.png", "--model", awq_dir, "--awq-kernel", "fastest")
    assert code == 2 and "unknown AWQ kernel 'fastest'" in err and "triton" in err  # a bad option value


def test_an_awq_preset_without_gptqmodel_says_how_to_install_before_downloading(cli, monkeypatch):
    from importlib import metadata

    from internvl_cli.models import checkpoints

    real = metadata.version

    def version(name):
        if name == "gptqmodel":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(checkpoints, "resolve_checkpoint", lambda *a, **k: pytest.fail("downloaded anyway"))
    code, out, err = cli("ocr", SAMPLES / "chart.png")  # the default preset is AWQ
    assert code == 6 and out == ""
    assert err.count("\n") == 1 and 'pip install "internvl-cli[awq]"' in err and "gptqmodel" in err


# -- building a compiled kernel ------------------------------------------------------------------------

MARLIN = KernelChoice(KERNELS["marlin"], "cuda", "test", compile=True,
                      fallback=KernelChoice(KERNELS["triton"], "cuda", "Triton's AWQ GEMM needs no nvcc"))


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.progress = threading.Event()

    def emit(self, record):
        self.lines.append(f"{record.levelname}: {record.getMessage()}")
        if "still compiling" in record.getMessage():
            self.progress.set()


@pytest.fixture()
def lines():
    handler = Lines()
    logger = logging.getLogger("internvl_cli")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_build_says_what_it_does_then_reports_progress_until_done(lines):
    built = []

    def compile_extension(name):
        assert lines.progress.wait(30), "no progress line while compiling"
        built.append(name)

    awq.build_kernel(MARLIN, heartbeat=0.01, compile_extension=compile_extension)
    assert built == ["marlin_fp16"]
    assert lines.lines[0].startswith("INFO: compiling the marlin AWQ kernel for this GPU (once: about 2 min, "
                                     "cached in ")
    assert any(line.startswith("INFO: still compiling marlin (") for line in lines.lines)
    assert lines.lines[-1].startswith("INFO: marlin kernel ready (")


def test_a_failed_build_falls_back_to_the_compiler_free_kernel(lines, monkeypatch):
    def broken(name):
        raise RuntimeError("Marlin fp16: failed to build torch.ops JIT extension: nvcc fatal")

    monkeypatch.setattr(awq, "_gptqmodel_build", broken)
    loaded = []
    model, used = awq.load_with_kernel(MARLIN, lambda choice: loaded.append(choice.kernel.name) or "model")
    assert (model, used.kernel.name, loaded) == ("model", "triton", ["triton"])
    warning = [line for line in lines.lines if line.startswith("WARNING")]
    assert warning == ["WARNING: the marlin AWQ kernel did not build (Marlin fp16: failed to build torch.ops JIT "
                       "extension: nvcc fatal); using the triton kernel instead (Triton's AWQ GEMM needs no nvcc)"]


def test_the_failed_load_is_freed_before_the_fallback_loads(monkeypatch):
    """A load with a compiled kernel that fails part way (its weights already allocated) is let go before the
    fallback loads: nothing the first attempt made is still alive when the second one starts."""
    import weakref

    import torch

    monkeypatch.setattr(awq, "_gptqmodel_build", lambda name: None)
    first_attempt = []

    def load(choice):
        if not first_attempt:
            weights = torch.ones(1024, 1024)  # the half-loaded model's tensors
            first_attempt.append(weakref.ref(weights))
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        assert first_attempt[0]() is None, "the first attempt's weights are still alive"
        return "model"

    model, used = awq.load_with_kernel(MARLIN, load)
    assert (model, used.kernel.name) == ("model", "triton")


def test_a_forced_kernel_that_fails_to_build_is_an_error_not_a_swap(monkeypatch):
    monkeypatch.setattr(awq, "_gptqmodel_build", lambda name: (_ for _ in ()).throw(RuntimeError("no nvcc")))
    forced = KernelChoice(KERNELS["gemm"], "cuda", "asked for", compile=True)
    with pytest.raises(ModelLoadError, match="the gemm AWQ kernel did not build .no nvcc.") as info:
        awq.load_with_kernel(forced, lambda choice: pytest.fail("loaded anyway"))
    assert "doctor --warm" in info.value.hint


def test_kernels_without_an_extension_build_nothing():
    triton = KernelChoice(KERNELS["triton"], "cuda", "x")
    awq.build_kernel(triton, compile_extension=lambda name: pytest.fail("built"))


# -- quiet means quiet ---------------------------------------------------------------------------------


def _internvl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "internvl_cli.cli", *map(str, args)], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)


@needs_gptqmodel
def test_quiet_runs_on_the_awq_model_print_nothing_but_their_data(awq_dir):
    """In fresh processes, so that what gptqmodel, torchao and torch print at import time is covered too."""
    ocr = _internvl("-q", "ocr", SAMPLES / "invoice.pdf", "--model", awq_dir, "--max-new-tokens", "4",
                    "--pages", "1", "--max-tiles", "1")
    assert ocr.returncode == 0 and ocr.stderr == "" and "<!-- file:" in ocr.stdout
    extract = _internvl("-q", "extract", SAMPLES / "receipt.jpg", "--schema", "key_value", "--model", awq_dir,
                        "--max-new-tokens", "48", "--window-tiles", "1")
    assert extract.returncode == 0 and extract.stderr == "", extract.stderr
    assert json.loads(extract.stdout)["valid"] is True


@needs_gptqmodel
def test_verbose_lets_the_libraries_speak_on_stderr_never_on_stdout(awq_dir):
    run = _internvl("-v", "ocr", SAMPLES / "chart.png", "--model", awq_dir, "--max-new-tokens", "2",
                    "--max-tiles", "1")
    assert run.returncode == 0, run.stderr
    assert "GPT-QModel" in run.stderr and "awq_kernel=cpu-int4" in run.stderr  # gptqmodel's banner, our note
    assert "GPT-QModel" not in run.stdout


def test_inspect_imports_neither_torch_nor_onnxruntime():
    """Even with the full `pymupdf` 2.x installed (it imports onnxruntime through its layout module)."""
    code = (
        "import sys\n"
        "from internvl_cli.cli import main\n"
        f"sys.argv = ['internvl', 'inspect', {str(SAMPLES / 'invoice.pdf')!r}, {str(SAMPLES / 'chart.png')!r}, "
        "'--json']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "heavy = ['torch', 'onnxruntime', 'transformers', 'gptqmodel', 'pymupdf.layout', 'pymupdf4llm']\n"
        "print('LOADED', [name for name in heavy if name in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"tiles"') == 3 and "LOADED []" in done.stdout


def test_pymupdf_imported_our_way_still_gives_the_extras_to_those_who_ask():
    code = ("import sys\nfrom internvl_cli.documents.mupdf import import_pymupdf\nm = import_pymupdf()\n"
            "assert 'pymupdf.layout' not in sys.modules and 'pymupdf4llm' not in sys.modules\n"
            "assert sys.modules.get('pymupdf.layout', 1) is not None\nprint(m.open is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
