"""The machine a run or benchmark ran on and the versions it ran with, as recorded beside
its results (a run's config.json, an experiment's results.json, a benchmark's record)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    import numpy
    import torch

    from reslab import __version__

    return {"reslab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def machine() -> dict[str, Any]:
    import torch  # here, not at the top: `reslab runs` lists runs without loading torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
