"""Plain-text tables of model figures, with no torch: ``reslab models`` prints them without
importing it (``reslab.models.summary`` uses them too)."""

from __future__ import annotations

import re
import textwrap

CONVENTION = (
    "MACs: multiply-accumulates of conv and linear layers per image (torchvision's \"GFLOPS\"); "
    "FLOPs = 2 x MACs, as torch.utils.flop_counter counts them; BN, activations, pooling and "
    "additions are not counted."
)


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def wrapped(text: str) -> str:
    return textwrap.fill(text, width=90)


def count(n: int, word: str, plural: str | None = None) -> str:
    """``count(1, "epoch")`` -> "1 epoch", ``count(3, "epoch")`` -> "3 epochs";
    ``plural`` for the words that do not just add an s ("batch", "batches")."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {plural or word + 's'}"


def format_count(n: int) -> str:
    """MACs and FLOPs with an SI prefix: 1.81 G, 118.01 M, 5.12 K."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}"
    return str(n)


def text_table(
    header: list[str], body: list[list[str]], left: int = 1, rule_before_last: bool = False
) -> str:
    """Plain aligned text: the first ``left`` columns left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(header), rule, *map(line, body)]
    if rule_before_last:
        lines.insert(-1, rule)
    return "\n".join(lines)


def natural_key(name: str) -> list:
    """resnet18 before resnet101: numbers compared as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
