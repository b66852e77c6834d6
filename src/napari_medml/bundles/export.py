"""Export a model's network to TorchScript or ONNX (logits for a ``(1, C, *patch)`` input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from napari_medml.errors import BundleError

__all__ = ["export_onnx", "export_torchscript"]


def _example_input(model: Any) -> torch.Tensor:
    return torch.zeros((1, model.in_channels, *model.patch_size), dtype=torch.float32)



def export_torchscript(model: Any, path: str | Path) -> Path:
    """Trace the network (logits for a ``(1, C, *patch)`` input) to a TorchScript file."""
    path = Path(path)
    net = model.network.to("cpu").eval()
    with torch.no_grad():
        traced = torch.jit.trace(net, _example_input(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path



def export_onnx(model: Any, path: str | Path) -> Path:
    """Export the network to ONNX (needs the optional ``onnx`` package)."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise BundleError("ONNX export needs the 'onnx' package: pip install 'napari-medml[export]'") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.network.to("cpu").eval()
    with torch.no_grad():
        torch.onnx.export(net, (_example_input(model),), str(path), input_names=["image"],
                          output_names=["logits"])
    return path
