"""TEST ENVIRONMENT ONLY: installed into CI's venv by .ci/run, never part of internvl-cli.

PyPI's torchvision is a CUDA build. Beside the CPU build of torch its compiled ops (_C.so) cannot load, and
its `_meta_registrations` then fails at import (`operator torchvision::nms does not exist`): it registers
fake kernels for two ops whose schemas only the compiled library defines. vLLM's InternVL code needs only
torchvision's Python transforms. This hook runs after `torchvision.extension` has tried to load the compiled
ops and before `_meta_registrations`; only when that load failed does it declare the two op schemas (no
kernels, so calling nms still fails loudly). A working torchvision is left untouched. A .pth file in
site-packages imports this module at interpreter start; nothing heavy is imported until torchvision is.
"""
import importlib.abc
import sys

_FIRST_AFTER_EXTENSION = ("torchvision._autograd_registrations", "torchvision._meta_registrations")
_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


class _DeclareMissingTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in _FIRST_AFTER_EXTENSION:
            return None
        sys.meta_path.remove(self)
        extension = sys.modules.get("torchvision.extension")
        if extension is not None and not extension._has_ops():
            import torch

            for op in ("nms", "qnms"):
                torch.library.define(f"torchvision::{op}", _SCHEMA)
        return None  # the regular finders import the module itself


sys.meta_path.insert(0, _DeclareMissingTorchvisionOps())
