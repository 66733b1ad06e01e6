"""`reslab data ...` (written by the data work; placeholder registers nothing yet)."""


def register(subcommands):
    return {}
