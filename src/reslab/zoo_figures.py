"""Block, depth, parameters and FLOPs of every zoo model at its natural input, for
``reslab models``.

Summing them means building and running some sixty networks (seconds, and torch's import
before that), so the figures are kept in ``zoo_figures_table.py`` and ``reslab models``
reads them without importing torch. ``python -m benchmarks.zoo_figures`` rewrites the table
after a change to a spec or a unit; a test checks that it is what ``summary`` computes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from reslab.tables import natural_key


@dataclass(frozen=True)
class ZooFigures:
    name: str
    block: str
    depth: int
    params: int
    flops: int
    input_shape: tuple[int, int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def kept_figures(pattern: str = "*") -> list[ZooFigures]:
    """The kept figures of the zoo models matching a shell-style pattern, sorted naturally."""
    from reslab.zoo_figures_table import FIGURES

    names = sorted((n for n in FIGURES if fnmatch.fnmatch(n, pattern)), key=natural_key)
    return [ZooFigures(n, *FIGURES[n][:4], tuple(FIGURES[n][4])) for n in names]
