"""The model commands: ``reslab summary`` (shapes, parameters, MACs per stage), ``reslab
models`` (the zoo) and ``reslab grow`` (a checkpoint deepened by identity units)."""

from __future__ import annotations

import argparse
import json
from argparse import Namespace

from reslab.cli.train import CHECKPOINT
from reslab.errors import ConfigError, UnknownNameError


def register(subcommands) -> dict:
    parser = subcommands.add_parser(
        "summary", help="Shapes, parameters and MACs per stage.",
        description="Output shape, parameters, MACs and FLOPs of the stem, each stage and the "
        "head of a zoo model, a checkpoint, a run directory or a model folder.")
    parser.add_argument("name", nargs="?", default=None, help="A zoo model (`reslab models`), "
                        "a .safetensors checkpoint, a run directory or a model folder.")
    parser.add_argument("--input", default=None,
                        help="CxHxW (e.g. 1x96x96), or one side (96) with the model's channels; "
                        "default: the input it is trained on (a checkpoint's own).")
    parser.add_argument("--in-channels", type=int, default=None,
                        help="Input channels of a zoo model (e.g. 1 for grey images).")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="Classes of a zoo model's head.")
    parser.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                        help="Print JSON instead of a table.")
    parser.add_argument("--compare", nargs="+", default=[],
                        help="Models to set side by side with NAME (NAME may be left out).")

    models = subcommands.add_parser(
        "models", help="List the model zoo.", description="The zoo: block, depth, parameters "
        "and MACs of each model at its natural input size.")
    models.add_argument("pattern", nargs="?", default="*", help="Shell-style filter, e.g. "
                        "'res*'; a bare word matches anywhere in the name.")
    models.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                        help="Print JSON instead of a table.")
    grow = subcommands.add_parser(
        "grow", help="add identity residual units to a checkpoint",
        description="Deepen a trained ResNet: append identity-initialised residual units to a "
        "stage; the grown network computes the same function and keeps every weight.")
    grow.add_argument("checkpoint", help=CHECKPOINT)
    grow.add_argument("--stage", type=int, required=True, help="stage to deepen, from 1")
    grow.add_argument("--blocks", type=int, required=True, help="units to add")
    grow.add_argument("--out", required=True, metavar="NEW_CHECKPOINT",
                      help="where to write the grown checkpoint (.safetensors)")
    grow.add_argument("--shortcut", action=argparse.BooleanOptionalAction, default=True,
                      help="residual units (default); --no-shortcut adds plain units, freshly "
                      "initialised (plain networks only)")
    return {"summary": run_summary, "models": run_models, "grow": run_grow}


def run_summary(options: Namespace) -> int:
    from reslab.models.summary import Comparison

    names = list(dict.fromkeys([n for n in [options.name, *options.compare] if n]))
    if not names:
        raise ConfigError("reslab summary needs a model name; `reslab models` lists them")
    summaries = [_summary(name, options) for name in names]
    result = Comparison(tuple(summaries)) if options.compare else summaries[0]
    print(json.dumps(result.to_dict(), indent=2) if options.json else result.render())
    return 0


def _summary(target: str, options: Namespace):
    """A zoo name's summary, or that of the model a checkpoint or run directory holds."""
    from reslab.models.summary import summary
    from reslab.paths import expand

    path = expand(target, "summary")
    overrides = {k: v for k in ("in_channels", "num_classes")
                 if (v := getattr(options, k)) is not None}
    if not (path.exists() or path.suffix == ".safetensors"):
        return summary(target, options.input, **overrides)
    from reslab.runtime.checkpoint import open_checkpoint, resolve_checkpoint

    if overrides:
        raise ConfigError("--in-channels and --num-classes change a zoo model; a checkpoint "
                          "has its own")
    # shapes and counts only: the checked network on the meta device, as a zoo name's, so
    # that any input size costs no memory
    checkpoint = open_checkpoint(resolve_checkpoint(path))
    return summary(checkpoint.skeleton, options.input or checkpoint.meta.input_size,
                   name=checkpoint.meta.model)


def run_models(options: Namespace) -> int:
    from reslab.tables import CONVENTION, format_count, format_shape, text_table, wrapped
    from reslab.zoo_figures import kept_figures

    pattern = options.pattern
    if not any(c in pattern for c in "*?["):  # a bare word matches anywhere, as pip search did
        pattern = f"*{pattern}*"
    figures = kept_figures(pattern)  # kept figures: no network built, no torch imported
    if not figures:
        raise UnknownNameError(f"no model matches {options.pattern!r}; try `reslab models`")
    if options.json:
        print(json.dumps([{"name": f.name, "block": f.block, "depth": f.depth,
                           "params": f.params, "macs": f.macs, "flops": f.flops,
                           "input": list(f.input_shape)} for f in figures], indent=2))
        return 0
    body = [[f.name, f.block, str(f.depth), f"{f.params:,}", format_count(f.macs),
             format_shape(f.input_shape)] for f in figures]
    print(text_table(["name", "block", "depth", "params", "MACs", "input"], body, left=2))
    print(wrapped(CONVENTION))
    return 0


def run_grow(ns: Namespace) -> int:
    from reslab.grow import grow_checkpoint
    from reslab.tables import count

    path, grown = grow_checkpoint(ns.checkpoint, ns.stage, ns.blocks, ns.out,
                                  shortcut=ns.shortcut)
    kind = "identity-initialised residual" if ns.shortcut else "plain"
    print(f"wrote {path}: {count(ns.blocks, kind + ' unit')} added to stage {ns.stage}; depths "
          f"now {list(grown.spec.depths)} ({grown.spec.depth} layers)")
    return 0
