"""Hardware, the facts: what this machine reports (torch and its GPUs, the NVIDIA driver the OS shows, compilers,
cached AWQ kernels), gathered into one `Machine` that the choices in hardware/ are pure functions of."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    capability: tuple[int, int]
    total_bytes: int
    free_bytes: int | None = None


@dataclass(frozen=True)
class Driver:
    """What the operating system shows of an NVIDIA driver, whether or not torch can use it."""

    version: str | None = None  # kernel module version, /proc/driver/nvidia/version (or nvidia-smi)
    cuda_version: str | None = None  # the newest CUDA this driver runs, from nvidia-smi's header
    gpus: tuple[str, ...] = ()  # GPU models from /proc/driver/nvidia/gpus/*/information or nvidia-smi
    device_nodes: tuple[str, ...] = ()  # /dev/nvidia0, /dev/nvidia1, ...

    @property
    def present(self) -> bool:
        return bool(self.version or self.gpus)


@dataclass(frozen=True)
class Toolchain:
    """What compiling gptqmodel's CUDA kernels (torch cpp_extension) and Triton's launcher needs."""

    nvcc: str | None = None
    nvcc_version: tuple[int, int] | None = None
    ninja: str | None = None
    cxx: str | None = None  # host C++ compiler for cpp_extension (CXX, c++, g++, clang++)
    cc: str | None = None  # host C compiler Triton builds its launcher with (CC, cc, gcc, clang)
    python_headers: bool = True  # Python.h, which Triton's launcher and every cpp_extension build include
    # The CUDA developer headers gptqmodel's kernel builds include that no include dir here has (nvcc alone, e.g.
    # a pip-installed compiler, does not bring them); () when all are found
    missing_cuda_headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Machine:
    """Everything the engine's choices depend on; `probe_machine` fills it in, tests build it by hand."""

    torch_version: str = "2.13.0"
    torch_cuda: str | None = None  # torch.version.cuda; None for a CPU-only build
    cuda_error: str | None = None  # what torch said when CUDA did not initialise
    gpus: tuple[Gpu, ...] = ()  # the CUDA devices torch can use
    arch_list: tuple[str, ...] = ()  # torch.cuda.get_arch_list(): what this torch has kernels for; () unknown
    driver: Driver = field(default_factory=Driver)
    toolchain: Toolchain = field(default_factory=Toolchain)
    triton: str | None = None  # Triton's version, when installed (CUDA torch wheels bring it)
    cpu_int4pack: bool = True  # torch has the ATen int4pack CPU matmul (torch >= 2.5)
    cached_kernels: frozenset[str] = frozenset()  # gptqmodel JIT extensions already built for this torch/GPU
    memory_bytes: int | None = None  # system RAM
    installed: frozenset[str] = frozenset()  # optional accelerators found: "flash_attn"


def cuda_major(version: str | None) -> int:
    """The major number of a CUDA or driver version string ("13.0" -> 13; 0 when unreadable)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """"580.65.06" -> (580, 65, 6), for comparing driver versions; None when there is none."""
    if not version:
        return None
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts) if parts else None


# ---------------------------------------------------------------------------------------------- probing

# The gptqmodel extensions `auto` may use (never Machete: computing its cache key fetches CUTLASS).
CACHEABLE_EXTENSIONS = ("marlin_fp16", "marlin_bf16", "exllamav2_awq", "awq")


def probe_machine(*, toolchain: bool = True, cached_kernels: bool = False, free_memory: bool = True,
                  smi: bool | None = None) -> Machine:
    """The facts of this machine. torch is imported (quietly); gptqmodel only when `cached_kernels` is asked for
    and a GPU is there. `free_memory` initialises CUDA on each device to read its free memory; nvidia-smi runs
    when `smi`, by default only when torch sees no GPU (to tell why)."""
    from ..quiet import quiet_third_party

    quiet_third_party()
    import torch

    cuda_build = torch.version.cuda
    gpus, cuda_error = _torch_gpus(torch, free_memory) if cuda_build else ((), None)
    machine = Machine(
        torch_version=torch.__version__, torch_cuda=cuda_build, cuda_error=cuda_error, gpus=gpus,
        arch_list=tuple(torch.cuda.get_arch_list()) if gpus else (),
        driver=read_driver(use_smi=not gpus if smi is None else smi),
        toolchain=probe_toolchain() if toolchain else Toolchain(),
        triton=_triton_version(), cpu_int4pack=hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
        memory_bytes=_memory_bytes(), installed=_installed_accelerators(),
    )
    if cached_kernels and gpus:
        machine = _replace(machine, cached_kernels=cached_extensions(CACHEABLE_EXTENSIONS))
    return machine


def _replace(machine: Machine, **changes) -> Machine:
    from dataclasses import replace

    return replace(machine, **changes)


def _torch_gpus(torch, free_memory: bool) -> tuple[tuple[Gpu, ...], str | None]:
    """torch's CUDA devices; when there are none, the reason torch gives (its initialisation warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        reasons = [" ".join(str(w.message).split()) for w in caught]
        if not reasons:
            try:
                torch.cuda.init()
            except Exception as exc:  # the reason is all we want from it
                reasons.append(" ".join(str(exc).split()))
        return (), (reasons[0][:300] if reasons else None)
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free = None
        if free_memory:
            try:
                free = int(torch.cuda.mem_get_info(index)[0])
            except Exception:  # a device that is busy or in a bad state still gets listed
                free = None
        gpus.append(Gpu(index, props.name, (props.major, props.minor), int(props.total_memory), free))
    return tuple(gpus), None


def free_gpu_bytes(device: str) -> int | None:
    """Free memory of a CUDA device now (after a model is loaded), or None."""
    import torch

    try:
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    except Exception:
        return None


def release_gpu_memory(device: str) -> None:
    """After a failed attempt has been let go (out of its exception handler): collect its frames' tensors and
    hand the cached blocks back to the CUDA driver, so the next attempt has the memory the failed one held."""
    import gc

    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- the driver

def read_driver(root: Path = Path("/"), smi: Callable[[], str | None] | None = None, use_smi: bool = True) -> Driver:
    """The NVIDIA driver as the OS shows it, independent of torch: /proc/driver/nvidia, /dev/nvidia*, and
    nvidia-smi's header (the newest CUDA the driver runs) when `use_smi`.

    `root` and `smi` let tests feed a machine's files and nvidia-smi output.
    """
    proc = root / "proc" / "driver" / "nvidia"
    version = parse_proc_version(_read(proc / "version"))
    gpus = tuple(filter(None, (parse_gpu_information(_read(info))
                               for info in sorted((proc / "gpus").glob("*/information")))))
    nodes = tuple(sorted(str(p) for p in (root / "dev").glob("nvidia[0-9]*")))
    if smi is None:
        smi = _run_nvidia_smi if root == Path("/") else (lambda: None)
    smi_text = smi() if use_smi else None
    smi_version, cuda_version, smi_gpus = parse_nvidia_smi(smi_text)
    return Driver(version=version or smi_version, cuda_version=cuda_version, gpus=gpus or smi_gpus,
                  device_nodes=nodes)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_proc_version(text: str | None) -> str | None:
    """The module version in /proc/driver/nvidia/version (proprietary and open kernel modules)."""
    if not text:
        return None
    match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def parse_gpu_information(text: str | None) -> str | None:
    """The `Model:` line of /proc/driver/nvidia/gpus/<bus>/information."""
    match = re.search(r"^Model:\s*(.+?)\s*$", text or "", flags=re.MULTILINE)
    return match.group(1) if match else None


def parse_nvidia_smi(text: str | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(driver version, newest CUDA it runs, GPU names) from plain `nvidia-smi` output."""
    if not text:
        return None, None, ()
    driver = re.search(r"Driver Version:\s*(\d+(?:\.\d+)+)", text)
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    names = tuple(m.strip() for m in re.findall(r"^\|\s+\d+\s+(NVIDIA[^|]*?|Tesla[^|]*?|Quadro[^|]*?)\s{2,}",
                                                   text, flags=re.MULTILINE))
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None, names)


def _run_nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or "") + (done.stderr or "")


# ---------------------------------------------------------------------------------------------- compilers

def probe_toolchain(env: Mapping[str, str] = os.environ, which: Callable[[str], str | None] = shutil.which,
                    run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Toolchain:
    """nvcc as torch's cpp_extension finds it (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda), its version, ninja
    (also the one pip puts beside this Python), and the host compilers."""
    nvcc = find_nvcc(env, which)
    return Toolchain(
        nvcc=nvcc, nvcc_version=nvcc_version(nvcc, run) if nvcc else None, ninja=find_ninja(which),
        cxx=_compiler(env.get("CXX"), ("c++", "g++", "clang++"), which),
        cc=_compiler(env.get("CC"), ("cc", "gcc", "clang"), which),
        python_headers=Path(sysconfig.get_paths()["include"], "Python.h").is_file(),
        missing_cuda_headers=missing_cuda_headers(cuda_include_dirs(env, nvcc, _site_dirs())),
    )


# What gptqmodel's CUDA kernel sources (Marlin's among them) include beyond the runtime's own headers.
CUDA_DEV_HEADERS = ("cublas_v2.h", "cusparse.h", "cusolverDn.h", "cublasLt.h")


def cuda_include_dirs(env: Mapping[str, str], nvcc: str | None, site_dirs: Iterable[Path]) -> list[Path]:
    """Where a kernel build finds CUDA headers: the toolkit's include dir (CUDA_HOME, CUDA_PATH, beside nvcc)
    and those of the nvidia-* pip packages (site-packages/nvidia/<library or cu13>/include)."""
    homes = [Path(env[var]) for var in ("CUDA_HOME", "CUDA_PATH") if env.get(var)]
    if nvcc:
        homes.append(Path(nvcc).parent.parent)
    dirs = [home / "include" for home in homes]
    for site_dir in site_dirs:
        dirs += sorted(Path(site_dir, "nvidia").glob("*/include"))
    return dirs


def missing_cuda_headers(include_dirs: Iterable[Path], headers: Iterable[str] = CUDA_DEV_HEADERS) -> tuple[str, ...]:
    """The headers of `headers` that none of `include_dirs` holds."""
    dirs = list(include_dirs)
    return tuple(header for header in headers if not any(Path(d, header).is_file() for d in dirs))


def pcre2_headers_found(include_dirs: Iterable[Path] | None = None) -> bool:
    """pcre2.h (libpcre2-dev), which building pypcre, gptqmodel's pcre module, needs; the system's include dirs
    by default."""
    if include_dirs is None:
        multiarch = sysconfig.get_config_var("MULTIARCH") or ""
        include_dirs = [Path("/usr/include"), Path("/usr/local/include"), Path("/usr/include", multiarch)]
    return any(Path(d, "pcre2.h").is_file() for d in include_dirs)


def _site_dirs() -> list[Path]:
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(d) for d in dirs if Path(d).is_dir()]


def find_nvcc(env: Mapping[str, str], which: Callable[[str], str | None]) -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var) and Path(env[var], "bin", "nvcc").is_file():
            return str(Path(env[var], "bin", "nvcc"))
    found = which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


def nvcc_version(nvcc: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> tuple[int, int] | None:
    try:
        done = run([nvcc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release\s+(\d+)\.(\d+)", (done.stdout or "") + (done.stderr or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_ninja(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """ninja on PATH, or the one the `ninja` wheel put beside this interpreter (a cron job that calls
    venv/bin/internvl directly has that folder off PATH, and torch's cpp_extension then cannot find it)."""
    found = which("ninja")
    if found:
        return found
    beside = Path(sys.executable).parent / "ninja"
    return str(beside) if beside.is_file() else None


def ninja_on_path() -> None:
    """Put the interpreter's own bin folder on PATH when ninja lives only there, before compiling."""
    beside = Path(sys.executable).parent
    if not shutil.which("ninja") and (beside / "ninja").is_file():
        os.environ["PATH"] = f"{beside}{os.pathsep}{os.environ.get('PATH', '')}"


def _compiler(configured: str | None, names: Iterable[str], which: Callable[[str], str | None]) -> str | None:
    if configured:
        return which(configured) or (configured if Path(configured).is_file() else None)
    for name in names:
        found = which(name)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------------- the rest

def _triton_version() -> str | None:
    for name in ("triton", "pytorch-triton"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _installed_accelerators() -> frozenset[str]:
    return frozenset(name for name in ("flash_attn",) if importlib.util.find_spec(name) is not None)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def kernel_cache_dir() -> Path:
    """Where gptqmodel keeps the kernels it compiles (its GPTQMODEL_TORCH_EXTENSIONS_DIR, by default under
    ~/.cache/gptqmodel/torch_extensions)."""
    configured = os.environ.get("GPTQMODEL_TORCH_EXTENSIONS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "gptqmodel" / "torch_extensions"


def cached_extensions(names: Iterable[str]) -> frozenset[str]:
    """Which of gptqmodel's JIT extensions already have a build for this torch, CUDA and GPU set, by asking
    gptqmodel for each one's fingerprinted build folder (its private API: any failure means "not cached")."""
    from ..quiet import quiet_logbar, quiet_third_party, stdout_to_stderr

    if importlib.util.find_spec("gptqmodel") is None:
        return frozenset()
    quiet_third_party()
    quiet_logbar()
    try:
        with stdout_to_stderr():
            from gptqmodel import extension as api
    except Exception:  # a broken gptqmodel is reported by the AWQ loader, with the install hint
        return frozenset()
    found = set()
    for name in names:
        try:
            ext = api._extension_for_name(name)
            if ext._ops_available():
                found.add(name)
                continue
            root = ext.build_root()
            if any(path.is_file() for path in ext._candidate_binary_paths(root)):
                found.add(name)
        except Exception:  # an API change or an unreadable cache: report it as not cached
            continue
    return frozenset(found)
