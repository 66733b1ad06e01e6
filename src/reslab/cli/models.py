"""``reslab summary NAME`` (shapes, parameters, MACs per stage) and ``reslab models``."""

from __future__ import annotations

import json
from argparse import Namespace

from reslab.errors import ConfigError, UnknownNameError


def register(subcommands) -> dict:
    parser = subcommands.add_parser(
        "summary", help="Shapes, parameters and MACs per stage.",
        description="Output shape, parameters, MACs and FLOPs of the stem, each stage and the "
        "head of a zoo model.")
    parser.add_argument("name", nargs="?", default=None, help="A zoo model (`reslab models`).")
    parser.add_argument("--input", default=None,
                        help="CxHxW (e.g. 1x96x96), or one side (96) with the model's channels; "
                        "default: the model's natural input.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument("--compare", nargs="+", default=[],
                        help="Models to set side by side with NAME (NAME may be left out).")

    models = subcommands.add_parser(
        "models", help="List the model zoo.", description="The zoo: block, depth, parameters "
        "and MACs of each model at its natural input size.")
    models.add_argument("pattern", nargs="?", default="*", help="Shell-style filter, e.g. "
                        "'res*'; a bare word matches anywhere in the name.")
    models.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    return {"summary": run_summary, "models": run_models}


def run_summary(options: Namespace) -> int:
    from reslab.inspect import compare, summary

    names = list(dict.fromkeys([n for n in [options.name, *options.compare] if n]))
    if not names:
        raise ConfigError("reslab summary needs a model name; `reslab models` lists them")
    result = (compare(names, options.input) if options.compare
              else summary(names[0], options.input))
    print(json.dumps(result.to_dict(), indent=2) if options.json else result.render())
    return 0


def run_models(options: Namespace) -> int:
    from reslab.inspect import CONVENTION, format_count, format_shape, text_table, wrapped
    from reslab.models import list_models
    from reslab.zoo_figures import zoo_figures

    pattern = options.pattern
    if not any(c in pattern for c in "*?["):  # a bare word matches anywhere, as pip search did
        pattern = f"*{pattern}*"
    names = list_models(pattern)
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
