"""The parser every reslab command uses: jsonargparse's, with its refusals on one line."""

from __future__ import annotations

from typing import NoReturn

from jsonargparse import ArgumentParser


class Parser(ArgumentParser):
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """A wrong type, unknown option or missing argument: one line and exit 2 (not usage)."""
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        where = parser.prog.replace(" [options]", "")
        self.exit(2, f"reslab: error: {' '.join(message.split())} (see: {where} --help)\n")
