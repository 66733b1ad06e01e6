"""`reslab` as a subprocess that stops at an exact point (not collected by pytest).

Runs ``reslab.cli.main(argv)``. ``RESLAB_PAUSE=WHERE:STEP,EPOCH`` in the environment makes it
wait at one point of the training checkpoint whose metadata has that step and epoch (``epoch``
counts completed epochs), or of one validation:

- ``after-checkpoint:S,E`` — the checkpoint is complete and renamed into place;
- ``mid-checkpoint:S,E``   — half of the checkpoint's bytes are in its temporary file, fsynced;
- ``evaluation:E``         — inside the validation of epoch E (1-based), before it returns.

On arriving it creates the file named by ``RESLAB_PAUSED`` (if set). The test then SIGKILLs it,
or creates the file named by ``RESLAB_GO`` to let it go on.
"""

import os
import sys
import time
from pathlib import Path

import reslab.models.weights
import reslab.training.loop as LOOP
import reslab.training.writer as WRITER
from reslab.cli import main
from reslab.io import atomic_output

PAUSE_LIMIT_S = 300  # never outlive a test that forgot this process


def pause() -> None:
    paused, go = os.environ.get("RESLAB_PAUSED"), os.environ.get("RESLAB_GO")
    if paused:
        Path(paused).touch()
    waited = 0.0
    while not (go and os.path.exists(go)):
        if waited > PAUSE_LIMIT_S:
            os._exit(3)
        time.sleep(0.02)
        waited += 0.02


def pause_after_checkpoint(step: int, epoch: int) -> None:
    save = WRITER.save_checkpoint

    def save_then_pause(path, weights, metadata, train_state=None):
        written = save(path, weights, metadata, train_state)
        if train_state is not None and (metadata.step, metadata.epoch) == (step, epoch):
            pause()
        return written

    WRITER.save_checkpoint = save_then_pause


def pause_mid_checkpoint(step: int, epoch: int) -> None:
    save, write_bytes, armed = WRITER.save_checkpoint, reslab.models.weights.atomic_write_bytes, []

    def save_armed(path, weights, metadata, train_state=None):
        if train_state is not None and (metadata.step, metadata.epoch) == (step, epoch):
            armed.append(path)
        return save(path, weights, metadata, train_state)

    def write_half_then_pause(path, data):
        if not armed or armed.pop() != path:
            return write_bytes(path, data)
        with atomic_output(path) as file:  # the same temporary file the real write uses
            file.write(data[: len(data) // 2])
            file.flush()
            os.fsync(file.fileno())
            pause()
            file.write(data[len(data) // 2:])

    WRITER.save_checkpoint = save_armed
    reslab.models.weights.atomic_write_bytes = write_half_then_pause


def pause_in_evaluation(epoch: int) -> None:
    evaluate, calls = LOOP.evaluate, []

    def evaluate_then_pause(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        calls.append(1)
        if len(calls) == epoch:  # validations run once per epoch, the test one after the last
            pause()
        return result

    LOOP.evaluate = evaluate_then_pause


def pause_after_step(step: int) -> None:
    train_step = LOOP.train_step

    def step_then_pause(state, x, y):
        result = train_step(state, x, y)
        if state.counters.step == step:
            pause()
        return result

    LOOP.train_step = step_then_pause


if __name__ == "__main__":
    if os.environ.get("RESLAB_PAUSE"):
        where, _, at = os.environ["RESLAB_PAUSE"].partition(":")
        numbers = [int(n) for n in at.split(",")]
        {"after-checkpoint": pause_after_checkpoint, "mid-checkpoint": pause_mid_checkpoint,
         "evaluation": pause_in_evaluation, "after-step": pause_after_step}[where](*numbers)
    sys.exit(main(sys.argv[1:]))
