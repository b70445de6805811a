"""On a CUDA machine (skipped elsewhere): the tiny AWQ model through every kernel this machine allows, and `doctor`
there. The first run may compile kernels (minutes: Marlin ~2 min); later runs load gptqmodel's cached builds."""
from __future__ import annotations

import json

import pytest
import torch

import tiny_awq
from internvl_cli.hardware import awq
from internvl_cli.errors import ModelLoadError
from test_awq import LOGIT_ATOL, _inputs, _logits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("gptqmodel") is None, reason="needs the awq extra"),
]


@pytest.fixture(scope="module")
def awq_dir(tmp_path_factory):
    return tiny_awq.build_tiny_native_awq(tmp_path_factory.mktemp("awq") / "tiny-awq", seed=0, group_size=32)


@pytest.fixture(scope="module")
def reference_logits(tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    ref = tiny_awq.build_dequantized_reference(tmp_path_factory.mktemp("ref") / "tiny-ref", seed=0, group_size=32)
    return _logits(AutoModelForImageTextToText.from_pretrained(ref, dtype=torch.float32).eval(), torch.float32)


@pytest.fixture(scope="module")
def machine():
    from internvl_cli.hardware.machine import probe_machine

    return probe_machine(toolchain=True, cached_kernels=True)


# Machete is left out: Hopper only, its first build downloads CUTLASS, and the tiny widths (32-128) are under
# its tile minimums (in 64, out 128).
@pytest.mark.parametrize("kernel", ["auto", "marlin", "exllamav2", "gemm", "triton", "torch"])
def test_the_tiny_awq_model_through_each_kernel_this_machine_allows(kernel, awq_dir, reference_logits, machine):
    from internvl_cli.engine import load_engine
    from internvl_cli.hardware.kernels import choose_awq_kernel

    try:
        expected = choose_awq_kernel(machine, "cuda", "float16", kernel)
    except ModelLoadError as error:
        pytest.skip(f"not on this machine: {error.one_line()}")
    engine = load_engine(str(awq_dir), device="cuda", awq_kernel=kernel)
    engine.load()
    model = engine.model
    used = {type(model.get_submodule(name)).__name__ for name in awq.quantized_module_names(model)}
    print(f"--awq-kernel {kernel}: chose {expected.kernel.name}, ran {engine.kernel.kernel.name} {used}")
    assert used == {engine.kernel.kernel.label}
    if kernel != "auto":
        assert engine.kernel.kernel.name == kernel  # a forced kernel is never swapped
    assert model.dtype == torch.float16
    assert next(model.model.language_model.parameters()).device.type == "cuda"
    with torch.no_grad():
        inputs = {k: v.to("cuda") for k, v in _inputs(model.config, torch.float16).items()}
        logits = model(**inputs).logits.float().cpu()
    # float16 CUDA kernels: the same budget as bfloat16 on the CPU (float16 has the finer mantissa)
    assert (logits - reference_logits).abs().max().item() <= LOGIT_ATOL


def test_doctor_on_a_cuda_machine(cli, machine):
    code, out, err = cli("doctor", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["gpus"][0].startswith("cuda:0 ") and report["device"].startswith("cuda (--device auto)")
    assert report["awq kernel"].split()[0] in ("marlin", "exllamav2", "gemm", "triton", "torch")
    assert report["awq kernel"].split()[2] == "cuda"
    print(json.dumps(report, indent=2))


def test_doctor_warm_builds_or_finds_the_kernel(cli):
    code, out, err = cli("doctor", "--warm", "--json")
    assert code == 0, err
    warm = json.loads(out)["warm"]
    assert warm.startswith(("built the", "nothing to build")), warm
    again = json.loads(cli("doctor", "--warm", "--json")[1])["warm"]
    assert again.startswith("nothing to build")  # cached now (or nothing compiled at all)
