"""ONNX export of a checkpoint: the graph, what it expects and gives, and the metadata a
consumer needs (class names, normalisation, input size, spec), checked with onnxruntime."""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.errors import ConfigError, MissingDependencyError, WeightsError
from reslab.io import atomic_write_bytes
from reslab.paths import check_output, printable
from reslab.runtime.checkpoint import model_from_checkpoint, resolve_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta
from reslab.runtime.evaluate import predict_proba
from reslab.runtime.run_folder import run_files

MIN_OPSET, MAX_OPSET = 9, 20  # the exporter's range (dynamo=False)


class ExportGraph(nn.Module):
    """The model as exported: optionally normalising raw pixels first, and optionally
    averaging the class probabilities of each image's test-time views: its mirror, and its
    shifts by ``tta_shift`` pixels (as ``predict`` does)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], *,
                 normalize: bool, tta_flip: bool, tta_shift: int = 0):
        super().__init__()
        self.model, self.normalize = model, normalize
        self.tta_flip, self.tta_shift = tta_flip, tta_shift
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    @property
    def output(self) -> str:
        return "probabilities" if self.tta_flip or self.tta_shift else "logits"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            images = (images - self.mean) / self.std
        if self.output == "logits":
            return self.model(images)
        return predict_proba(self.model, images, self.tta_flip, self.tta_shift)


def export_onnx(
    checkpoint: str | os.PathLike, out: str | os.PathLike, *, opset: int = 17,
    include_normalization: bool = False, tta_flip: bool | None = None,
) -> dict[str, Any]:
    """Write ``out`` with a dynamic batch axis and reslab's metadata, verified against PyTorch
    with onnxruntime on random input.

    ``include_normalization``: the graph takes pixels in [0, 1] and normalises them itself;
    otherwise it takes ``(pixels - mean) / std`` (mean and std are in the metadata either way).
    ``tta_flip``: put the mirror averaging in the graph (output: probabilities); default: as
    the run evaluated. Returns what was written, and the max abs difference found."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("reslab export needs onnx and onnxruntime: pip install "
                                     "'reslab[export]'") from None
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (what "
                          f"torch.onnx's TorchScript exporter writes), got {opset!r}")
    source = resolve_checkpoint(checkpoint)
    out = check_output(out, "--onnx", suffix=".onnx", inputs=run_files(source))
    model, meta = model_from_checkpoint(source)
    # --no-tta: logits of the image alone; otherwise the views the run evaluated
    tta_shift = 0 if tta_flip is False else meta.tta_shift
    tta_flip = meta.tta_flip if tta_flip is None else tta_flip
    graph = ExportGraph(model, list(meta.mean), list(meta.std), normalize=include_normalization,
                        tta_flip=tta_flip, tta_shift=tta_shift).eval()
    channels, height, width = meta.input_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            graph, (torch.rand(2, channels, height, width),), buffer, dynamo=False,
            opset_version=opset, input_names=["images"], output_names=[graph.output],
            dynamic_axes={"images": {0: "batch"}, graph.output: {0: "batch"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    described = describe(meta, graph)
    for key, value in described.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    check = torch.rand(3, channels, height, width)
    with torch.no_grad():
        expected = graph(check).numpy()
    max_abs = float(abs(session.run(None, {"images": check.numpy()})[0] - expected).max())
    if not math.isfinite(max_abs):  # NaN compares false with any bound: it must fail here
        raise WeightsError(f"{printable(source)}: the model's outputs are not numbers (NaN or "
                           "infinite weights: the file is damaged or its run diverged), so the "
                           "ONNX graph cannot be checked against it; nothing written")
    # random pixels excite a whitened stem's high-frequency filters: outputs can be large, so
    # rounding is judged against their size
    relative = max_abs / max(float(abs(expected).max()), 1e-12)
    atomic_write_bytes(Path(out), data)
    return {"path": str(out), "max_abs_diff": max_abs, "max_rel_diff": relative,
            "metadata": described}


def _output_text(graph: ExportGraph) -> str:
    if graph.output == "logits":
        return "logits, no mirror averaging"
    if not graph.tta_shift:
        return "probabilities, each image's averaged with its mirror's"
    return (f"probabilities, each image's averaged over {2 * 3 if graph.tta_flip else 3} "
            f"views: shifted by 0 and +/-{graph.tta_shift} pixels"
            + (", and their mirrors" if graph.tta_flip else ""))


def describe(meta: CheckpointMeta, graph: ExportGraph) -> dict[str, Any]:
    """The metadata an exported file carries (``custom_metadata_map`` in onnxruntime)."""
    return {
        "model": meta.model,
        "classes": list(meta.classes),
        "input_size": list(meta.input_size),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "input": ("pixels in [0, 1], normalised in the graph" if graph.normalize else
                  "(pixels in [0, 1] - mean) / std, per channel"),
        "output": _output_text(graph),
        "spec": meta.spec,
    }
