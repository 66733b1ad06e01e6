"""Model folders between reslab and real timm, both ways, outside the test suite (it needs
timm, which reslab does not depend on):

    pip install --no-deps --target /tmp/timmpkg timm
    PYTHONPATH=src:/tmp/timmpkg python benchmarks/timm_folder.py FOLDER... [--from-timm NAME...]

Each FOLDER (``reslab export RUN --folder FOLDER``) is loaded by
``timm.create_model("local-dir:FOLDER", pretrained=True)`` and by reslab, and both run the
same input. Each ``--from-timm`` NAME is built by timm (random weights, random norm
statistics, 1 channel, 7 classes), written by timm's ``save_for_hf`` and read back by reslab.
Prints the max absolute difference of the outputs and writes
benchmarks/results/timm_folder.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "timm_folder.json"


def _compare(ours: torch.nn.Module, theirs: torch.nn.Module, size: list[int]) -> dict:
    torch.manual_seed(0)
    x = torch.randn(4, *size)
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    return {"input": [4, *size], "max_abs_diff": float((a - b).abs().max()),
            "max_abs_output": float(b.abs().max()), "identical": bool(torch.equal(a, b))}


def to_timm(folder: str) -> dict:
    import timm

    from reslab.runtime.checkpoint import model_from_checkpoint

    ours, meta = model_from_checkpoint(Path(folder))
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True)
    data = timm.data.resolve_data_config({}, model=theirs)
    return {"direction": "reslab folder -> timm", "folder": Path(folder).name,
            "architecture": meta.model, "timm_data_config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in data.items()},
            **_compare(ours, theirs, meta.input_size)}


def from_timm(name: str) -> dict:
    import timm
    from timm.models import save_for_hf

    from reslab.runtime.checkpoint import model_from_checkpoint

    torch.manual_seed(0)
    theirs = timm.create_model(name, num_classes=7, in_chans=1).eval()
    for key, tensor in theirs.state_dict().items():  # non-trivial norm statistics
        if key.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            tensor.uniform_(-0.2, 0.2)
    with tempfile.TemporaryDirectory() as folder:
        save_for_hf(theirs, folder, model_config={"label_names": [f"c{i}" for i in range(7)]})
        files = sorted(p.name for p in Path(folder).iterdir())
        ours, meta = model_from_checkpoint(Path(folder))
        size = [1, 64, 64]
        return {"direction": "timm save_for_hf -> reslab", "architecture": name,
                "files": files, "classes": list(meta.classes), **_compare(ours, theirs, size)}


def main(argv: list[str]) -> None:
    import timm

    split = argv.index("--from-timm") if "--from-timm" in argv else len(argv)
    rows = [to_timm(f) for f in argv[:split]] + [from_timm(n) for n in argv[split + 1:]]
    for row in rows:
        print(f"{row['direction']}: {row['architecture']} at {row['input']}: max abs diff "
              f"{row['max_abs_diff']:.2e} (outputs up to {row['max_abs_output']:.2f}), "
              f"identical: {row['identical']}")
    RESULTS.write_text(json.dumps({"timm": timm.__version__, "torch": torch.__version__,
                                   "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
