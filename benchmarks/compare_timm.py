"""reslab's timm family against timm itself: the same random weights, the same input, the
same outputs? Two interpreters, since timm cannot be imported beside reslab's torch:

    PYTHONPATH=/tmp/timmpkg /usr/bin/python3 benchmarks/compare_timm.py export /tmp/timm_cmp
    python benchmarks/compare_timm.py check /tmp/timm_cmp

(model names after the folder: only those).
``export`` (torch + timm only; no reslab) builds each timm model with random weights and
non-trivial norm statistics, and saves its state dict, an input at the model's pretrained
size and timm's eval-mode output. ``check`` loads each file into reslab's model of the same
name, runs the input, and prints (and writes to benchmarks/results/compare_timm.json) the
max absolute and max relative difference of the outputs, with parameters and MACs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REFERENCE = (Path(__file__).resolve().parents[1] / "tests" / "data"
             / "timm_resnet_family.json")
RESULTS = Path(__file__).resolve().parent / "results" / "compare_timm.json"


def _names() -> list[str]:
    names = list(json.loads(REFERENCE.read_text())["models"])
    return [n for n in names if n in sys.argv[3:]] if sys.argv[3:] else names


def _randomise(model: torch.nn.Module) -> None:
    """Weights timm's init leaves trivial (zeroed last norms, unit BN) made random, so every
    layer shows in the output; norm scales below 1 keep a 200-layer net's output near 1."""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if name.endswith("running_var") or (tensor.dim() == 1 and name.endswith("weight")):
            tensor.uniform_(0.2, 0.6) if name.endswith("weight") else tensor.uniform_(0.5, 1.5)
        elif tensor.dim() == 1:  # biases and running means
            tensor.uniform_(-0.2, 0.2)


def export(out_dir: str) -> None:
    import timm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in _names():
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval()
        _randomise(model)
        size = model.pretrained_cfg["input_size"]
        x = torch.randn(2, *size)
        with torch.no_grad():
            y = model(x)
        torch.save({"state_dict": model.state_dict(), "input": x, "output": y},
                   out / f"{name}.pt")
        print(f"{name}: saved {tuple(y.shape)} output at {size}", flush=True)


def check(in_dir: str) -> None:
    from reslab import create_model
    from reslab.models.summary import summary

    reference = json.loads(REFERENCE.read_text())["models"]
    rows = []
    for name in _names():
        saved = torch.load(Path(in_dir) / f"{name}.pt", weights_only=True)
        model = create_model(name).eval()
        model.load_state_dict(saved["state_dict"])  # strict: every key, every shape
        with torch.no_grad():
            y = model(saved["input"])
        expected = saved["output"]
        max_abs = float((y - expected).abs().max())
        rows.append({
            "model": name, "max_abs_diff": max_abs,
            "max_rel_diff": max_abs / float(expected.abs().max()),
            "params": sum(p.numel() for p in model.parameters()),
            "params_reference": reference[name]["params"],
            "macs": summary(name).macs, "macs_reference": reference[name]["macs_conv_linear"],
        })
        r = rows[-1]
        print(f"{name:20s} max abs {r['max_abs_diff']:.2e}  max rel {r['max_rel_diff']:.2e}  "
              f"params {r['params']:,} ({r['params'] - r['params_reference']:+d})  "
              f"MACs {r['macs']:,} ({r['macs'] / r['macs_reference'] - 1:+.3%})", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("export", "check"):
        sys.exit(__doc__)
    {"export": export, "check": check}[sys.argv[1]](sys.argv[2])
