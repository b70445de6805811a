"""What the machine reports: the NVIDIA driver as the OS shows it (fed from files, as on a real host), compilers,
and `internvl doctor` saying truthfully what a run would do with it, here and on machines described by hand."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from internvl_cli.hardware import machine
from internvl_cli.hardware.machine import Driver, Gpu, Machine, Toolchain

PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
                "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
PROC_VERSION_OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
                     "(dvs-builder@U16-I3-B14-2-1)  Sun Jul 27 06:54:38 UTC 2025\n")
GPU_INFORMATION = "Model: \t\t NVIDIA A10G\nIRQ:   \t\t 37\nGPU UUID: \t GPU-0c1e\nBus Type: \t PCIe\n"
NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA A10G                    On  |   00000000:00:1E.0 Off |                    0 |
|   1  Tesla T4                       On  |   00000000:00:1F.0 Off |                    0 |
+-----------------------------------------+------------------------+----------------------+
"""


def fake_root(tmp_path: Path, version: str | None = PROC_VERSION, nodes: int = 1) -> Path:
    proc = tmp_path / "proc" / "driver" / "nvidia"
    (proc / "gpus" / "0000:00:1e.0").mkdir(parents=True)
    if version is not None:
        (proc / "version").write_text(version)
    (proc / "gpus" / "0000:00:1e.0" / "information").write_text(GPU_INFORMATION)
    (tmp_path / "dev").mkdir()
    for i in range(nodes):
        (tmp_path / "dev" / f"nvidia{i}").write_text("")
    (tmp_path / "dev" / "nvidiactl").write_text("")
    return tmp_path


def test_the_driver_as_the_os_shows_it(tmp_path):
    driver = machine.read_driver(fake_root(tmp_path), smi=lambda: NVIDIA_SMI)
    assert driver == Driver(version="550.54.15", cuda_version="12.4", gpus=("NVIDIA A10G",),
                            device_nodes=(str(tmp_path / "dev" / "nvidia0"),))
    assert driver.present


def test_driver_parsers():
    assert machine.parse_proc_version(PROC_VERSION_OPEN) == "580.65.06"
    assert machine.parse_proc_version("garbage") is None
    assert machine.parse_nvidia_smi(NVIDIA_SMI) == ("550.54.15", "12.4", ("NVIDIA A10G", "Tesla T4"))
    assert machine.parse_nvidia_smi(None) == (None, None, ())


def test_no_driver(tmp_path):
    (tmp_path / "dev").mkdir()
    driver = machine.read_driver(tmp_path)
    assert driver == Driver() and not driver.present


def test_a_container_shows_the_driver_but_no_device_nodes(tmp_path):
    driver = machine.read_driver(fake_root(tmp_path, nodes=0), smi=lambda: None)
    assert driver.version == "550.54.15" and driver.device_nodes == () and driver.present


def test_toolchain_probe_follows_cuda_home_and_reads_nvcc(tmp_path):
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("")

    def run(cmd, **kwargs):
        assert cmd == [str(nvcc), "--version"]
        return subprocess.CompletedProcess(cmd, 0, "Cuda compilation tools, release 12.8, V12.8.93\n", "")

    tools = machine.probe_toolchain(env={"CUDA_HOME": str(tmp_path / "cuda"), "CC": "/nonexistent/cc"},
                                    which=lambda name: f"/usr/bin/{name}" if name in ("ninja", "c++") else None,
                                    run=run)
    assert tools.nvcc == str(nvcc) and tools.nvcc_version == (12, 8)
    assert tools.ninja == "/usr/bin/ninja" and tools.cxx == "/usr/bin/c++"
    assert tools.cc is None  # CC names a compiler that is not there


def test_this_machine():
    found = machine.probe_machine(toolchain=True)
    assert found.torch_version.startswith("2.")
    if found.torch_cuda is None:
        assert found.gpus == ()
    assert found.memory_bytes and found.memory_bytes > 2**30


# -- doctor --------------------------------------------------------------------------------------------


def test_doctor_here_is_truthful(cli):
    code, out, err = cli("doctor", "--json")
    report = json.loads(out)
    found = machine.probe_machine(toolchain=True)
    assert code == 0, err
    if not found.gpus:  # `--json` keys are snake_case
        assert report["device"].startswith("cpu") or "stops" in report["device"]
        assert report["awq_kernel"].startswith(("cpu-int4 on cpu", "torch on cpu"))
    if found.torch_cuda is None:
        # a CPU build of torch cannot compile CUDA kernels, whatever nvcc is installed
        assert "cannot be built here: this torch is a CPU-only build" in report["toolchain"]
    nvcc = machine.find_nvcc(__import__("os").environ, __import__("shutil").which)
    assert ("nvcc not found" in report["toolchain"]) == (nvcc is None)


def _report(hand_made: Machine, **kwargs) -> dict:
    from internvl_cli.diagnostics import diagnose

    return diagnose(machine=hand_made, **kwargs)


def test_doctor_on_a_hopper_machine_without_a_toolkit_names_triton_and_why():
    h100 = Machine(torch_version="2.13.0+cu130", torch_cuda="13.0", triton="3.7.0",
                   gpus=(Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30, 79 * 2**30),),
                   driver=Driver("580.65.06", "13.0", ("NVIDIA H100 80GB HBM3",), ("/dev/nvidia0",)),
                   toolchain=Toolchain(ninja="/usr/bin/ninja", cxx="/usr/bin/c++", cc="/usr/bin/cc"))
    report = _report(h100)
    assert report["device"].startswith("cuda (--device auto): NVIDIA H100")
    assert report["awq kernel"].startswith("triton on cuda (AwqGEMMTritonLinear)")
    assert "nvcc (the CUDA toolkit) is not installed" in report["awq kernel"]
    assert "cannot be built here: nvcc" in report["toolchain"]
    assert report["dtype"] == "AWQ: float16, unquantized: bfloat16"
    assert "internvl3-8b-awq" in report["presets that fit"]
    with_toolkit = _report(Machine(**{**h100.__dict__, "toolchain": Toolchain(
        nvcc="/usr/local/cuda/bin/nvcc", nvcc_version=(13, 0), ninja="/usr/bin/ninja", cxx="/usr/bin/c++",
        cc="/usr/bin/cc")}))
    assert with_toolkit["awq kernel"].startswith("marlin on cuda")
    assert "--warm" in with_toolkit["awq kernel"] and "should that fail: triton" in with_toolkit["awq kernel"]
    forced = _report(h100, awq_kernel="marlin")
    assert forced["awq kernel"].startswith("a run with --awq-kernel marlin stops: --awq-kernel marlin must be "
                                           "compiled first")


def test_doctor_when_the_gpu_is_there_but_torch_cannot_use_it():
    stuck = Machine(torch_version="2.13.0+cu130", torch_cuda="13.0",
                    driver=Driver("550.54.15", "12.4", ("NVIDIA A10G",), ("/dev/nvidia0",)))
    report = _report(stuck)
    assert report["device"].startswith("a run with --device auto stops: an NVIDIA GPU is present")
    assert "550.54.15" in report["device"] and "13.0" in report["device"]
    assert report["nvidia driver"].startswith("550.54.15; runs CUDA up to 12.4")
    assert report["gpus"] == ["none visible to torch"]
    assert _report(stuck, device="cpu")["device"] == "cpu (--device cpu): --device cpu"


def test_doctor_on_a_v100_with_a_cuda_13_torch_says_a_run_stops_and_which_torch_to_install():
    v100 = Machine(torch_version="2.13.0+cu130", torch_cuda="13.0",
                   gpus=(Gpu(0, "Tesla V100-SXM2-16GB", (7, 0), 16 * 2**30, 15 * 2**30),),
                   arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
                   driver=Driver("580.65.06", "13.0", ("Tesla V100-SXM2-16GB",), ("/dev/nvidia0",)))
    report = _report(v100)
    assert report["torch"] == "2.13.0+cu130 (CUDA 13.0), kernels for sm_75, sm_80, sm_86, sm_90, sm_100, sm_120"
    assert report["device"].startswith("a run with --device auto stops: this torch (CUDA 13.0) has "
                                       "no kernels for Tesla V100-SXM2-16GB (compute capability 7.0)")
    assert "download.pytorch.org/whl/cu126" in report["device"]


def test_doctor_warm_on_the_cpu_has_nothing_to_build(cli):
    pytest.importorskip("gptqmodel")
    code, out, err = cli("doctor", "--warm", "--json")
    assert code == 0, err
    assert json.loads(out)["warm"].startswith("nothing to build")
