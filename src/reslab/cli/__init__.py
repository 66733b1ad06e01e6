"""The ``reslab`` command: a thin layer over the Python API.

Each module in this package owns one or more top-level commands. It exposes
``register(subcommands) -> dict[str, handler]``: it adds its parsers to the argparse
subcommand group and returns, for each command name it added, the function that runs it
with the parsed namespace. Building the parser imports no torch, so ``--help`` and
``--version`` answer at once; each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from reslab import __version__
from reslab.cli.parser import Parser

Handler = Callable[[argparse.Namespace], int | None]


def build_parser() -> tuple[Parser, dict[str, Handler]]:
    from reslab.cli import data, experiments, models, runs, train

    parser = Parser(prog="reslab", description="Residual networks: build, inspect, train and "
                    "explain them. `reslab COMMAND --help` describes a command.")
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    handlers: dict[str, Handler] = {}
    for module in (train, models, runs, data, experiments):
        handlers.update(module.register(subcommands))
    _add_verbose(parser)
    return parser, handlers


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` is accepted by every command and subcommand, anywhere on the line."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show reslab's debugging logs")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_verbose(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        parser.print_help()
        return 0
    options = parser.parse_args(args)
    if options.command is None:
        parser.print_help()
        return 0
    _configure_logging(getattr(options, "verbose", False))
    from reslab.errors import Interrupted, ReslabError
    from reslab.paths import printable  # messages quote names from files and folders

    try:
        return handlers[options.command](options) or 0
    except Interrupted as stopped:
        print(f"reslab: {printable(stopped)}", file=sys.stderr)
        return 130
    except ReslabError as error:
        print(f"reslab: error: {printable(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as error:  # a path the checks let through that the system still refuses
        if error.errno != errno.ENAMETOOLONG:
            raise
        print(f"reslab: error: {printable(error.filename or '')[:80]}...: a path or a name "
              "in it is longer than the system takes; shorten it", file=sys.stderr)
        return 1


def _configure_logging(verbose: bool) -> None:
    """reslab's own logs on stderr (debugging ones with -v); other libraries' warnings only."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("reslab").setLevel(logging.DEBUG if verbose else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
