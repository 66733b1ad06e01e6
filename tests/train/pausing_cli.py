"""`reslab` as a subprocess that can be stopped at an exact point (not collected by pytest).

Runs ``reslab.cli.main(argv)``. With ``RESLAB_PAUSE_AT=STEP,EPOCH`` in the environment it
pauses right after writing the training checkpoint whose metadata has that step and epoch
(``epoch`` counts completed epochs): the file is complete and renamed into place. The test then
SIGKILLs it, or creates the file named by ``RESLAB_GO`` to let it go on.
"""

import os
import sys
import time

import reslab.training.fit  # noqa: F401 (so that sys.modules holds the module, not the function)
from reslab.cli import main

PAUSE_LIMIT_S = 300  # never outlive a test that forgot this process


def _pause_after(step: int, epoch: int, go: str | None) -> None:
    fit_module = sys.modules["reslab.training.fit"]
    save = fit_module.save_checkpoint

    def save_then_pause(path, weights, metadata, train_state=None):
        written = save(path, weights, metadata, train_state)
        if train_state is not None and (metadata["step"], metadata["epoch"]) == (step, epoch):
            waited = 0.0
            while not (go and os.path.exists(go)):
                if waited > PAUSE_LIMIT_S:
                    os._exit(3)
                time.sleep(0.02)
                waited += 0.02
        return written

    fit_module.save_checkpoint = save_then_pause


if __name__ == "__main__":
    if os.environ.get("RESLAB_PAUSE_AT"):
        pause_step, pause_epoch = map(int, os.environ["RESLAB_PAUSE_AT"].split(","))
        _pause_after(pause_step, pause_epoch, os.environ.get("RESLAB_GO"))
    sys.exit(main(sys.argv[1:]))
