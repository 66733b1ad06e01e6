"""`reslab summary` and `reslab models` (placeholder registers nothing yet)."""


def register(subcommands):
    return {}
