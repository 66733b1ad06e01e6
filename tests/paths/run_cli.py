"""`reslab` as a process for the path matrix (not collected by pytest): the IDX checksums and
counts made the fixtures' (``RESLAB_PATHS_TABLES``, a JSON file), no system data folder
(``RESLAB_PATHS_SYSTEM``), and tests/reliability/pausing_cli.py's ``RESLAB_PAUSE`` points."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reliability"))

import pausing_cli  # noqa: E402

from reslab.cli import main  # noqa: E402
from reslab.data import fetch, idx  # noqa: E402

if __name__ == "__main__":
    tables = json.loads(Path(os.environ["RESLAB_PATHS_TABLES"]).read_text())
    idx.FASHION_MNIST_SHA256.update(tables["sha256"])
    idx.COUNTS.update(tables["counts"])
    fetch.SYSTEM_DIRS = (Path(os.environ["RESLAB_PATHS_SYSTEM"]),)
    if os.environ.get("RESLAB_PAUSE"):
        where, _, at = os.environ["RESLAB_PAUSE"].partition(":")
        assert where == "after-step", where
        pausing_cli.pause_after_step(int(at))
    sys.exit(main(sys.argv[1:]))
