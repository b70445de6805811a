"""benchmarks/gpu_proof.py, the GPU proof in one command: its dry run works on this CPU machine (so the script
cannot rot unseen) and states its steps, the wheels it needs and its expected duration."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_dry_run_prints_the_plan_without_a_gpu():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_proof.py"), "--dry-run", "--wheels",
                           "/mnt/wheels"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    for step in ("wheels", "pytest -m gpu", "build marlin", "kernels, cold load", "kernels, cached load", "auto with nvcc hidden",
                 "forced out-of-memory", "doctor --json"):
        assert f". {step}: ~" in plan, step
    assert "pip install --no-index --no-deps --find-links /mnt/wheels gptqmodel==7.6.0 pypcre" in plan
    assert "CUDA_HOME=unset" in plan and "--awq-kernels marlin,triton,torch" in plan
    assert "expected duration: ~" in plan and "min on an H100-class GPU" in plan
    minutes = float(plan.split("expected duration: ~", 1)[1].split(" min", 1)[0])
    assert minutes < 8


def test_nvcc_is_hidden_from_the_auto_step(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_proof

    toolkit, other = tmp_path / "cuda" / "bin", tmp_path / "bin"
    toolkit.mkdir(parents=True)
    other.mkdir()
    (toolkit / "nvcc").write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", f"{toolkit}:{other}")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    assert gpu_proof.without_nvcc() == {"PATH": str(other), "CUDA_HOME": None, "CUDA_PATH": None}
