"""``reslab summary NAME`` (shapes, parameters, MACs per stage) and ``reslab models``."""

from __future__ import annotations

import json

from jsonargparse import Namespace

from reslab.cli.parser import Parser
from reslab.errors import ConfigError, UnknownNameError
from reslab.inspect import (
    CONVENTION,
    compare,
    format_count,
    format_shape,
    summary,
    text_table,
    wrapped,
)
from reslab.models import list_models
from reslab.zoo_figures import zoo_figures


def register(subcommands) -> dict:
    parser = Parser(description="Output shape, parameters, MACs and FLOPs of the stem, "
                            "each stage and the head of a zoo model.")
    parser.add_argument("name", nargs="?", default=None, help="A zoo model (`reslab models`).")
    parser.add_argument("--input", type=str | None, default=None,
                        help="CxHxW (e.g. 1x96x96), or one side (96) with the model's channels; "
                        "default: the model's natural input.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument("--compare", nargs="+", type=str, default=[],
                        help="Models to set side by side with NAME (NAME may be left out).")
    subcommands.add_subcommand("summary", parser, help="Shapes, parameters and MACs per stage.")

    models = Parser(description="The zoo: block, depth, parameters and MACs of each "
                            "model at its natural input size.")
    models.add_argument("pattern", nargs="?", default="*", help="Shell-style filter, e.g. 'res*'.")
    models.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    subcommands.add_subcommand("models", models, help="List the model zoo.")
    return {"summary": run_summary, "models": run_models}


def run_summary(options: Namespace) -> int:
    names = list(dict.fromkeys([n for n in [options.name, *options.compare] if n]))
    if not names:
        raise ConfigError("reslab summary needs a model name; `reslab models` lists them")
    result = (compare(names, options.input) if options.compare
              else summary(names[0], options.input))
    print(json.dumps(result.to_dict(), indent=2) if options.json else result.render())
    return 0


def run_models(options: Namespace) -> int:
    names = list_models(options.pattern)
    if not names:
        raise UnknownNameError(f"no model matches {options.pattern!r}; try `reslab models`")
    figures = [zoo_figures(name) for name in names]  # kept figures: no network is built
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
