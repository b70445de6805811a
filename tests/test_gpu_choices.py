"""The transformers engine's choices on a CUDA machine (device, AWQ kernel, dtype, attention, batch limits) as pure
functions of what the machine reports: every GPU, driver and toolchain case here runs without a GPU."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from internvl_cli.hardware.device import CPU_COMFORT_BYTES, choose_attention, choose_device, choose_dtype, why_no_cuda
from internvl_cli.hardware.kernels import KERNELS, choose_awq_kernel, toolchain_problem, triton_problem
from internvl_cli.hardware.machine import Driver, Gpu, Machine, Toolchain
from internvl_cli.hardware.batch_sizing import ModelDims, default_batch_limits
from internvl_cli.errors import ExitCode, ModelLoadError, UsageError

GiB = 2**30
H100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 * GiB, 79 * GiB)
A10 = Gpu(0, "NVIDIA A10G", (8, 6), 24 * GiB, 23 * GiB)
T4 = Gpu(0, "Tesla T4", (7, 5), 16 * GiB, 15 * GiB)
V100 = Gpu(0, "Tesla V100-SXM2-16GB", (7, 0), 16 * GiB, 15 * GiB)
B200 = Gpu(0, "NVIDIA B200", (10, 0), 180 * GiB, 178 * GiB)

TOOLKIT = Toolchain(nvcc="/usr/local/cuda/bin/nvcc", nvcc_version=(13, 0), ninja="/usr/bin/ninja",
                    cxx="/usr/bin/c++", cc="/usr/bin/cc", python_headers=True)
NO_NVCC = Toolchain(ninja="/usr/bin/ninja", cxx="/usr/bin/c++", cc="/usr/bin/cc", python_headers=True)
DRIVER = Driver(version="580.65.06", cuda_version="13.0", gpus=("NVIDIA H100 80GB HBM3",),
                device_nodes=("/dev/nvidia0",))


def cuda_machine(gpu: Gpu = H100, toolchain: Toolchain = TOOLKIT, **changes) -> Machine:
    base = Machine(torch_version="2.13.0+cu130", torch_cuda="13.0", gpus=(gpu,), driver=DRIVER,
                   toolchain=toolchain, triton="3.7.0")
    return replace(base, **changes)


CPU_ONLY = Machine(torch_version="2.13.0+cpu", torch_cuda=None, toolchain=NO_NVCC, memory_bytes=24 * GiB)


# -- the AWQ kernel ------------------------------------------------------------------------------------


def test_hopper_with_a_matching_toolkit_compiles_marlin_once_and_keeps_triton_as_the_fallback():
    choice = choose_awq_kernel(cuda_machine(H100), "cuda")
    assert choice.kernel.name == "marlin" and choice.kernel.backend == "marlin"
    assert choice.compile and choice.extension == "marlin_fp16"
    assert "9.0" in choice.reason and "nvcc 13.0" in choice.reason
    assert choice.fallback is not None and choice.fallback.kernel.name == "triton" and not choice.fallback.compile


def test_machete_is_never_chosen_by_itself_it_downloads_cutlass():
    for gpu in (H100, A10, B200):
        assert choose_awq_kernel(cuda_machine(gpu), "cuda").kernel.name != "machete"
    forced = choose_awq_kernel(cuda_machine(H100), "cuda", forced="machete")
    assert forced.kernel.backend == "machete" and forced.compile and "CUTLASS" in forced.note
    with pytest.raises(ModelLoadError, match="Hopper"):
        choose_awq_kernel(cuda_machine(B200), "cuda", forced="machete")


def test_without_nvcc_a_gpu_gets_triton_never_a_kernel_that_must_be_compiled():
    for gpu in (H100, A10, T4, B200):
        choice = choose_awq_kernel(cuda_machine(gpu, NO_NVCC), "cuda")
        assert choice.kernel.name == "triton" and choice.kernel.backend == "gemm_triton", gpu
        assert not choice.compile and choice.extension is None
        assert "nvcc (the CUDA toolkit) is not installed" in choice.reason


def test_a_toolkit_whose_major_version_differs_from_torchs_cuda_cannot_compile():
    machine = cuda_machine(H100, replace(TOOLKIT, nvcc_version=(12, 4)))
    assert toolchain_problem(machine) == "nvcc 12.4 does not match torch's CUDA 13.0 (the major versions must agree)"
    assert choose_awq_kernel(machine, "cuda").kernel.name == "triton"
    # a minor difference is fine: torch's cpp_extension only warns
    assert toolchain_problem(cuda_machine(H100, replace(TOOLKIT, nvcc_version=(13, 1)))) is None


@pytest.mark.parametrize("missing, problem", [("ninja", "ninja is not installed"),
                                              ("cxx", "no C++ compiler"),
                                              ("nvcc_version", "cannot read the version")])
def test_every_piece_of_the_toolchain_is_checked(missing, problem):
    machine = cuda_machine(A10, replace(TOOLKIT, **{missing: None}))
    assert problem in toolchain_problem(machine)
    assert choose_awq_kernel(machine, "cuda").kernel.name == "triton"


def test_a_cached_build_is_used_without_a_toolchain():
    machine = cuda_machine(H100, NO_NVCC, cached_kernels=frozenset({"marlin_fp16"}))
    choice = choose_awq_kernel(machine, "cuda")
    assert choice.kernel.name == "marlin" and not choice.compile and "cached" in choice.reason
    assert choice.fallback.kernel.name == "triton"  # a stale cache that fails to load still has a way out
    # a cached bf16 build does not serve a float16 run
    machine = replace(machine, cached_kernels=frozenset({"marlin_bf16"}))
    assert choose_awq_kernel(machine, "cuda").kernel.name == "triton"


def test_older_gpus():
    # Turing: no Marlin (8.0+); the toolkit builds ExLlamaV2; without it Triton
    assert choose_awq_kernel(cuda_machine(T4), "cuda").kernel.name == "exllamav2"
    assert choose_awq_kernel(cuda_machine(T4, NO_NVCC), "cuda").kernel.name == "triton"
    # Volta: Triton needs 7.5, so without a toolkit only the torch kernel is left (and it says it is slow)
    choice = choose_awq_kernel(cuda_machine(V100, NO_NVCC), "cuda")
    assert choice.kernel.name == "torch" and "7.5" in choice.reason and "slower" in choice.note
    with pytest.raises(ModelLoadError, match="compute capability 8.0"):
        choose_awq_kernel(cuda_machine(T4), "cuda", forced="marlin")


@pytest.mark.parametrize("change, problem", [
    ({"triton": None}, "Triton is not installed"),
    ({"toolchain": replace(NO_NVCC, cc=None)}, "C compiler"),
    ({"toolchain": replace(NO_NVCC, python_headers=False)}, "Python.h"),
])
def test_triton_needs_no_nvcc_but_a_c_compiler_and_python_headers(change, problem):
    machine = cuda_machine(A10, **{"toolchain": NO_NVCC, **change})
    assert problem in triton_problem(machine, A10, "float16")
    choice = choose_awq_kernel(machine, "cuda")
    assert choice.kernel.name == "torch" and problem in choice.reason


def test_triton_computes_in_float16_only():
    assert "float16 only" in triton_problem(cuda_machine(A10), A10, "bfloat16")
    with pytest.raises(ModelLoadError, match="float16 only"):
        choose_awq_kernel(cuda_machine(A10), "cuda", dtype="bfloat16", forced="triton")
    # Marlin has a bfloat16 build of its own
    assert choose_awq_kernel(cuda_machine(A10), "cuda", dtype="bfloat16").extension == "marlin_bf16"


def test_a_forced_kernel_is_checked_before_anything_loads():
    with pytest.raises(ModelLoadError, match="must be compiled first") as info:
        choose_awq_kernel(cuda_machine(A10, NO_NVCC), "cuda", forced="marlin")
    assert info.value.exit_code == ExitCode.MODEL_LOAD and "nvcc" in info.value.message
    assert choose_awq_kernel(cuda_machine(A10, NO_NVCC), "cuda", forced="torch").kernel.backend == "torch_awq"
    forced = choose_awq_kernel(cuda_machine(A10), "cuda", forced="gemm")
    assert forced.compile and forced.extension == "awq" and forced.fallback is None  # asked for: no silent swap
    with pytest.raises(UsageError, match="unknown AWQ kernel 'fast'"):  # a bad option value: exit 2
        choose_awq_kernel(cuda_machine(A10), "cuda", forced="fast")
    with pytest.raises(ModelLoadError, match="CPU only"):
        choose_awq_kernel(cuda_machine(A10), "cuda", forced="cpu-int4")


def test_on_the_cpu():
    choice = choose_awq_kernel(CPU_ONLY, "cpu", "bfloat16")
    assert choice.kernel.name == "cpu-int4" and choice.kernel.backend == "torch_fused_awq" and not choice.compile
    assert choose_awq_kernel(CPU_ONLY, "cpu", forced="torch").kernel.backend == "torch_awq"
    old_torch = replace(CPU_ONLY, cpu_int4pack=False)
    assert choose_awq_kernel(old_torch, "cpu").kernel.name == "torch"
    with pytest.raises(ModelLoadError, match="CUDA GPUs only"):
        choose_awq_kernel(CPU_ONLY, "cpu", forced="triton")


def test_every_kernel_names_a_backend_transformers_accepts():
    """transformers' AwqConfig refuses backends outside its AwqBackend enum (checked on the installed version)."""
    from transformers.utils.quantization_config import AwqBackend

    assert {k.backend for k in KERNELS.values()} <= {b.value for b in AwqBackend}


def test_every_kernel_maps_to_the_gptqmodel_class_we_name():
    pytest.importorskip("gptqmodel")
    from gptqmodel.quantization import FORMAT, METHOD
    from gptqmodel.utils.importer import get_kernel_for_backend

    for kernel in KERNELS.values():
        assert get_kernel_for_backend(kernel.backend, METHOD.AWQ, FORMAT.GEMM).__name__ == kernel.label, kernel


# -- the device ----------------------------------------------------------------------------------------


def test_auto_takes_the_gpu():
    choice = choose_device(cuda_machine(A10), "auto")
    assert choice.device == "cuda" and "A10G" in choice.reason and choice.warning is None


def test_a_gpu_the_os_shows_but_torch_cannot_use_stops_the_run_with_the_versions():
    old = Driver(version="550.54.15", cuda_version="12.4", gpus=("NVIDIA A10G",), device_nodes=("/dev/nvidia0",))
    machine = cuda_machine(gpus=(), driver=old, cuda_error="The NVIDIA driver on your system is too old")
    with pytest.raises(ModelLoadError) as info:
        choose_device(machine, "auto", model_bytes=8 * GiB)
    line = info.value.one_line()
    assert "an NVIDIA GPU is present but torch cannot use it" in line
    assert "550.54.15" in line and "12.4" in line and "CUDA 13.0" in line and "580.65.06" in line
    assert "cu126" in line and "--device cpu" in line
    assert choose_device(machine, "cpu").device == "cpu"  # asked for: no error, no warning
    with pytest.raises(ModelLoadError, match="--device cuda: NVIDIA driver 550"):
        choose_device(machine, "cuda")


def test_a_driver_too_old_is_found_from_its_version_alone():
    machine = cuda_machine(gpus=(), driver=Driver(version="535.104.05", gpus=("Tesla T4",),
                                                  device_nodes=("/dev/nvidia0",)))
    why, hint = why_no_cuda(machine)
    assert "535.104.05 is too old" in why and "needs driver >= 580.65.06" in why and "cu126" in hint


def test_a_cpu_build_of_torch_beside_an_nvidia_driver():
    machine = replace(CPU_ONLY, driver=DRIVER)
    with pytest.raises(ModelLoadError, match="NVIDIA driver 580.65.06 found, but this torch .* is a CPU-only build"):
        choose_device(machine, "auto")


def test_a_container_without_its_device_nodes():
    machine = cuda_machine(gpus=(), driver=replace(DRIVER, device_nodes=()))
    why, hint = why_no_cuda(machine)
    assert "no /dev/nvidia* device nodes" in why and "--gpus all" in hint


def test_no_gpu_at_all_runs_on_the_cpu_with_a_warning_for_large_models():
    small = choose_device(CPU_ONLY, "auto", model_bytes=300 * 2**20)
    assert small.device == "cpu" and small.warning is None
    large = choose_device(CPU_ONLY, "auto", model_bytes=8 * GiB)
    assert large.device == "cpu" and "8.0 GB model on the CPU" in large.warning and "--device cpu" in large.warning
    huge = choose_device(CPU_ONLY, "auto", model_bytes=30 * GiB)
    assert "may not fit" in huge.warning
    assert choose_device(CPU_ONLY, "cpu", model_bytes=8 * GiB).warning is None
    assert choose_device(CPU_ONLY, "auto", model_bytes=CPU_COMFORT_BYTES).warning is None
    with pytest.raises(ModelLoadError, match="CPU-only build"):
        choose_device(CPU_ONLY, "cuda")


# torch.cuda.get_arch_list() of PyPI's torch 2.13 CUDA 13 wheel and of a CUDA 12.6 build.
CUDA13_ARCHES = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
CUDA126_ARCHES = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def test_a_v100_on_a_cuda_13_torch_stops_with_the_cuda_12_6_build_to_install():
    from internvl_cli.hardware.device import arch_problem

    problem = arch_problem(V100.capability, CUDA13_ARCHES, "13.0", V100.name)
    assert problem is not None and problem.exit_code == ExitCode.DEVICE
    line = problem.one_line()
    assert "compute capability 7.0" in line and "sm_75, sm_80" in line and "CUDA 12.6 build" in line
    assert "pip install torch --index-url https://download.pytorch.org/whl/cu126" in line
    assert arch_problem(V100.capability, CUDA126_ARCHES, "12.6") is None
    machine = cuda_machine(V100, arch_list=CUDA13_ARCHES)
    for device in ("auto", "cuda", "cuda:0"):
        with pytest.raises(ModelLoadError, match=r"this torch \(CUDA 13.0\) has no kernels for Tesla V100") as info:
            choose_device(machine, device)
        assert info.value.message.startswith("this torch" if device == "auto" else f"--device {device}: ")
        assert info.value.exit_code == ExitCode.DEVICE
        assert ("--device cpu" in info.value.hint) == (device == "auto")  # auto may run on the CPU on purpose
    assert choose_device(cuda_machine(V100, arch_list=CUDA126_ARCHES), "auto").device == "cuda"
    assert choose_device(machine, "cpu").device == "cpu"


@pytest.mark.parametrize("capability, arches, runs", [
    ((8, 9), ("sm_80", "sm_86", "sm_90"), True),          # machine code for 8.6 runs on a later minor of major 8
    ((9, 0), ("sm_80", "sm_90a"), True),                  # arch-specific code runs on its own capability
    ((10, 0), ("sm_80", "sm_90a"), False),                # ... and nowhere else
    ((10, 0), ("sm_80", "sm_90"), False),                 # machine code does not cross majors
    ((10, 0), ("sm_80", "sm_90", "compute_90"), True),    # PTX is compiled for any newer GPU
    ((12, 1), ("sm_75", "compute_120"), True),
    ((7, 0), ("sm_75", "compute_75"), False),             # PTX never runs on an older GPU
    ((7, 0), (), True),                                   # unknown list: not refused
])
def test_ptx_entries_cover_newer_gpus_and_machine_code_covers_its_major(capability, arches, runs):
    from internvl_cli.hardware.device import arch_problem

    assert (arch_problem(capability, arches, "13.0") is None) == runs


def test_a_gpu_newer_than_the_build_is_told_to_take_a_newer_torch():
    from internvl_cli.hardware.device import arch_problem

    problem = arch_problem((12, 0), CUDA126_ARCHES, "12.6", "NVIDIA RTX PRO 6000")
    assert "newer CUDA" in problem.one_line() and "cu126" not in problem.one_line()


def test_device_numbers():
    from internvl_cli.errors import UsageError

    for bad in ("tpu", "cuda:x", "cuda1"):
        with pytest.raises(UsageError, match=f"--device {bad}"):
            choose_device(cuda_machine(A10), bad)
    two = cuda_machine(gpus=(A10, replace(A10, index=1)))
    assert choose_device(two, "cuda:1").device == "cuda:1"
    with pytest.raises(ModelLoadError, match="numbered 0 to 1"):
        choose_device(two, "cuda:2")
    assert choose_awq_kernel(two, "cuda:1").kernel.name == "marlin"


# -- dtype and attention -------------------------------------------------------------------------------


def test_dtypes():
    assert choose_dtype("auto", "cuda", (9, 0), quantized=False) == "bfloat16"
    assert choose_dtype("auto", "cuda", (7, 5), quantized=False) == "float16"  # no bfloat16 before Ampere
    assert choose_dtype("bf16", "cuda", (9, 0), quantized=True) == "float16"  # the AWQ kernels' dtype
    assert choose_dtype("auto", "cpu", None, quantized=True) == "bfloat16"
    assert choose_dtype("fp16", "cpu", None, quantized=True) == "float16"
    assert choose_dtype("auto", "cpu", None, quantized=False) == "float32"
    assert choose_dtype("float16", "cpu", None, quantized=False) == "float16"


def test_attention():
    flash = frozenset({"flash_attn"})
    assert choose_attention("cuda", (9, 0), "bfloat16", flash) == "flash_attention_2"
    assert choose_attention("cuda", (9, 0), "bfloat16") == "sdpa"
    assert choose_attention("cuda", (7, 5), "float16", flash) == "sdpa"
    assert choose_attention("cuda", (8, 0), "float32", flash) == "sdpa"
    assert choose_attention("cpu", None, "float32", flash) == "sdpa"


# -- batch limits --------------------------------------------------------------------------------------

# InternVL3-8B (Qwen2.5-7B + InternViT-300M) and InternVL3-2B (Qwen2.5-1.5B), as their config.json say.
VISION_300M = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "image_size": [448, 448],
               "patch_size": [14, 14]}
DIMS_8B = ModelDims.from_config({"vision_config": VISION_300M, "text_config": {
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 151674}})
DIMS_2B = ModelDims.from_config({"vision_config": VISION_300M, "text_config": {
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "vocab_size": 151674}})


def test_model_dims_from_config():
    assert (DIMS_8B.head_dim, DIMS_8B.kv_heads, DIMS_8B.vision_tokens, DIMS_8B.image_tokens) == (128, 4, 1025, 256)


def test_batch_limits_grow_with_free_memory_and_stay_sane():
    # an 8B AWQ model (~8 GB) on a 16 GB GPU leaves ~7 GB: about today's fixed 8 pages / 64 tiles
    mid = default_batch_limits(7 * GiB, DIMS_8B)
    assert 5 <= mid.pages <= 10 and mid.tiles == mid.pages * 7 and "7.0 GiB free" in mid.reason
    big = default_batch_limits(70 * GiB, DIMS_8B)
    assert big.pages == 32 and big.tiles == 224  # capped
    tight = default_batch_limits(int(1.5 * GiB), DIMS_8B)
    assert tight.pages == 1 and tight.tiles == 13  # one page at the full budget (12 tiles + thumbnail) still runs
    assert default_batch_limits(0, DIMS_8B).pages == 1
    # a smaller language model fits more pages into the same memory; longer answers fewer
    assert default_batch_limits(7 * GiB, DIMS_2B).pages > mid.pages
    assert default_batch_limits(7 * GiB, DIMS_8B, max_new_tokens=4096).pages < mid.pages
    assert default_batch_limits(7 * GiB, DIMS_8B, attention="eager").pages < mid.pages
    sizes = [default_batch_limits(gb * GiB, DIMS_8B).pages for gb in range(1, 80)]
    assert sizes == sorted(sizes)
    assert default_batch_limits(7 * GiB, DIMS_8B, max_tiles=40).tiles >= 41


def test_a_run_takes_the_engines_limits_unless_the_user_gave_them():
    from internvl_cli.hardware.batch_sizing import BatchDefaults
    from internvl_cli.runs.batch import BatchSettings, _run_options

    class Engine:
        def batch_limits(self, unit_tiles=13, max_new_tokens=4096):
            return BatchDefaults(20, 140, "test")

    options = _run_options(BatchSettings(paths=["x"]), Engine())
    # rendering runs one engine window ahead: for transformers two batches (2 x 20 pages)
    assert (options.batch_size, options.max_batch_tiles, options.lookahead) == (20, 140, None)
    from internvl_cli.engine.hf import TransformersEngine
    assert TransformersEngine.window(None, options.limits) == 40
    options = _run_options(BatchSettings(paths=["x"], batch_size=3), Engine())
    assert (options.batch_size, options.max_batch_tiles) == (3, 140)
    options = _run_options(BatchSettings(paths=["x"]), None)  # nothing to do: the model never loaded
    assert (options.batch_size, options.max_batch_tiles) == (8, 64)


@pytest.mark.parametrize("command, budget", [
    (["ocr", "samples/chart.png", "--max-tiles", "40", "--max-new-tokens", "6"], (41, 6)),
    (["chart", "samples/chart.png", "--max-tiles", "2", "--max-new-tokens", "9"], (3, 9)),
    (["extract", "samples/chart.png", "--schema", "key_value", "--window-tiles", "8", "--window-pages", "2",
      "--max-new-tokens", "48"], (10, 48)),
])
def test_default_batch_limits_are_sized_for_the_runs_own_budgets(cli, tiny_model, monkeypatch, command, budget):
    """--max-tiles (plus the thumbnail; extract: a window's tiles and thumbnails) and --max-new-tokens reach the
    engine's batch sizing, instead of an A4 page at 1,024 tokens whatever the run asked for."""
    from internvl_cli.engine.hf import TransformersEngine
    from internvl_cli.hardware.batch_sizing import CPU_BATCH

    asked = []
    monkeypatch.setattr(TransformersEngine, "batch_limits",
                        lambda self, unit_tiles=13, max_new_tokens=4096: asked.append((unit_tiles, max_new_tokens))
                        or CPU_BATCH)
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    code, out, err = cli(*command, "--model", tiny_model)
    assert code in (0, 11), err
    assert asked == [budget]
