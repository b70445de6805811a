"""Marlin's pre-check: a compiled AWQ kernel is chosen only where its build will find the CUDA developer headers
and Python.h, so a build never runs for minutes and then fails on a missing include. The header search is a pure
function of an include tree, shown here on fake ones."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from internvl_cli.hardware.kernels import choose_awq_kernel, toolchain_problem
from internvl_cli.hardware.machine import CUDA_DEV_HEADERS, cuda_include_dirs, missing_cuda_headers

from test_gpu_choices import H100, TOOLKIT, cuda_machine


def _touch(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("/* header */\n")


def _nvcc_only_toolkit(root: Path) -> Path:
    """A CUDA home with nvcc and the runtime's header but none of the libraries' developer headers."""
    _touch(root / "bin", "nvcc")
    _touch(root / "include", "cuda_runtime.h")
    return root


def test_a_full_toolkit_under_cuda_home_has_every_header(tmp_path):
    home = _nvcc_only_toolkit(tmp_path / "cuda")
    _touch(home / "include", *CUDA_DEV_HEADERS)
    assert missing_cuda_headers(cuda_include_dirs({"CUDA_HOME": str(home)}, None, [])) == ()


def test_nvcc_alone_lacks_them_and_they_are_named(tmp_path):
    home = _nvcc_only_toolkit(tmp_path / "cuda")
    dirs = cuda_include_dirs({}, str(home / "bin" / "nvcc"), [])  # found beside nvcc, as on PATH
    assert dirs == [home / "include"]
    assert missing_cuda_headers(dirs) == ("cublas_v2.h", "cusparse.h", "cusolverDn.h", "cublasLt.h")


def test_the_nvidia_pip_packages_include_dirs_count(tmp_path):
    home = _nvcc_only_toolkit(tmp_path / "cuda")
    site = tmp_path / "site-packages"
    _touch(site / "nvidia" / "cublas" / "include", "cublas_v2.h", "cublasLt.h")
    _touch(site / "nvidia" / "cusparse" / "include", "cusparse.h")
    assert missing_cuda_headers(cuda_include_dirs({"CUDA_HOME": str(home)}, None, [site])) == ("cusolverDn.h",)
    _touch(site / "nvidia" / "cu13" / "include", "cusolverDn.h")  # CUDA 13's wheels share one include dir
    assert missing_cuda_headers(cuda_include_dirs({"CUDA_HOME": str(home)}, None, [site])) == ()


def test_missing_cuda_headers_keep_marlin_from_being_chosen_and_say_why():
    machine = cuda_machine(H100, replace(TOOLKIT, missing_cuda_headers=("cusparse.h", "cusolverDn.h")))
    problem = toolchain_problem(machine)
    assert problem is not None and "cusparse.h, cusolverDn.h" in problem and "cuda-toolkit-13-0" in problem
    choice = choose_awq_kernel(machine, "cuda")
    assert choice.kernel.name == "triton" and not choice.compile
    assert "cusparse.h" in choice.reason


def test_missing_python_headers_keep_marlin_from_being_chosen():
    machine = cuda_machine(H100, replace(TOOLKIT, python_headers=False))
    assert "Python.h" in toolchain_problem(machine)
    choice = choose_awq_kernel(machine, "cuda")
    assert not choice.compile and choice.kernel.name != "marlin"


def test_a_complete_toolkit_still_builds_marlin():
    assert toolchain_problem(cuda_machine(H100)) is None
    assert choose_awq_kernel(cuda_machine(H100), "cuda").kernel.name == "marlin"
