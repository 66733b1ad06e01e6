"""The ``reslab`` command: a thin layer over the Python API.

Each module in this package owns one or more top-level commands. It exposes
``register(subcommands) -> dict[str, handler]``: it adds its parsers to the
jsonargparse subcommand group and returns, for each command name it added, the
function that runs it with that command's parsed namespace.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from jsonargparse import Namespace

from reslab.cli.parser import Parser
from reslab.errors import ReslabError

Handler = Callable[[Namespace], int | None]


def build_parser() -> tuple[Parser, dict[str, Handler]]:
    from reslab.cli import data, experiments, models, train

    parser = Parser(prog="reslab", description="Residual networks: build, inspect, train.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debugging details.")
    subcommands = parser.add_subcommands(dest="command")
    handlers: dict[str, Handler] = {}
    for module in (train, models, data, experiments):
        handlers.update(module.register(subcommands))
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    cfg = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if cfg.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return handlers[cfg.command](cfg[cfg.command]) or 0
    except ReslabError as error:
        print(f"reslab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
