"""Every command block of README.md, executed: each command a user would type (```sh lines,
``$ `` lines of ```text blocks) and each ```python block, in README order, in one folder; where
the README pastes output, the lines that do not depend on the data or the machine must be what
the command prints now.

How a README command is scaled down to the fixtures (conftest's tiny generated data sets):

- data: ``$RESLAB_DATA`` is the fixtures' folder (Fashion-MNIST, MNIST, CIFAR-10 found there,
  as a user's would be), and the built-in sets' default validation hold-out is 20 images, not
  5,000 (``dataset.DEFAULT_VAL_SIZE``, as conftest makes the IDX counts the fixtures'), so the
  commands are typed without ``--data-dir`` or ``--val-size``;
- a new training run (``reslab train`` without ``--resume``, ``reslab.train(...)`` without
  ``resume=``) trains at batch 16 unless it gives a batch size (6 steps an epoch) and 1 epoch
  unless it gives ``--epochs`` (the presets' 4 to 10); ``--preset d2l`` gets ``--resize 32``
  (96x96: the same network at a ninth of the cost); the long ``--epochs`` of EPOCHS become 1
  and 2 (an extension stays one), and reslab.train's ``epochs`` of API_EPOCHS likewise;
  ``train_subset=2000`` is dropped and a ``--train-subset`` becomes 64 (the fixture has 100
  training images);
- ``reslab experiment degradation`` without ``--set`` gets EXPERIMENT_SET's (depth 8, one
  seed, 64 images, one epoch);
- Ctrl-C: a command whose pasted output says ``stopped by SIGINT at epoch E`` gets a SIGINT,
  raised in-process after the first step of epoch E; the commands of INTERRUPTED get one
  after the step named there (the README's next command continues after a Ctrl-C);
- synopsis lines (``NAME|CHECKPOINT|RUN [--json]``) run as the commands of EXPANDED;
- paths stay as typed: the commands run in a folder of their own (``runs/r20`` is relative),
  where USER_FILES (shoe.png, resnet18.pth, photos/...) are written from the fixtures first;
- Python blocks run as written, in one namespace per block, with ``reslab.train`` wrapped to
  shrink new runs as above; the block of the loop's parts is given ``images, labels`` (a batch
  it assumes) and its ``compile=True`` becomes ``compile=False`` (torch.compile takes minutes
  on 2 cores; tests/test_inference.py compiles); an expression followed by a ``# value``
  comment must give that value; a ```text block right after a block is its pasted output;
  the experiment fragment (``class Width``) is given the imports it leaves out.

Steps that train, or read a run, are marked slow and run in README order (``Runner``); the
others run alone, so ``-m "not slow"`` still checks models, summary and the refusals.

Pasted output is compared line by line after MASKING: numbers, Fashion-MNIST class names and
bf16/fp32 are masked in the lines that DATA_DEPENDENT matches (training, accuracies, data
counts: the README's come from the real data); the lines NOT_COMPARED matches are not compared
(elisions, a machine's path); every other line must be printed exactly. A README command
neither run nor in SKIPPED fails the test, so a new one must be handled here.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image

import reslab
import reslab.training.loop as LOOP
from reslab.data import dataset, idx

from .conftest import cli, isolated_env

README = Path(__file__).resolve().parents[2] / "README.md"

SKIPPED = {
    "make run": "creates .venv, installs packages and Fashion-MNIST, trains for minutes: the "
                "Makefile's own job, and the command it ends with (`reslab train`) runs here",
    "make test": "the same set-up, then ruff and the whole test suite (this file included)",
    "torchrun --nproc_per_node 2 -m reslab train --model resnet20":
        "two processes and a TCP rendezvous; tests/train/test_distributed.py runs torchrun "
        "with 2 CPU processes",
}
SKIPPED_PYTHON = {  # a block's first line: why it is not run
    "import timm": "timm is not a dependency (docs/timm_folders.md: checked outside CI with "
                   "real timm, benchmarks/timm_folder.py)",
}
EXPANDED = {  # a synopsis: the commands it stands for
    "reslab summary NAME|CHECKPOINT|RUN [--input CxHxW] [--in-channels N] [--json] "
    "[--compare A B]": [
        "reslab summary resnet20 --input 3x28x28", "reslab summary resnet18 --in-channels 1",
        "reslab summary runs/r20/checkpoints/best.safetensors", "reslab summary runs/r20 --json",
        "reslab summary --compare resnet20 plain20"],
    "reslab models [PATTERN]": ["reslab models", "reslab models 'resnext*'"],
    "reslab runs [DIR] [--json]": ["reslab runs", "reslab runs runs --json"],
    "reslab runs --compare runs/a runs/b --out curves.png": [
        "reslab runs --compare runs/r20 --out curves.png"],
    "reslab data info NAME | reslab data show NAME --out grid.png [--augmented]": [
        "reslab data info fashion-mnist", "reslab data show fashion-mnist --out grid.png",
        "reslab data show fashion-mnist --out grid-augmented.png --augmented"],
}
EPOCHS = {"30": "1", "40": "2"}  # the command line's
API_EPOCHS = {3: 1, 5: 2}  # reslab.train's (the CLI's 3 extends a run of 2: kept there)
BATCH = 16
SUBSET = "64"  # a --train-subset (the fixture has 100 training images)
STEPS_PER_EPOCH = 6  # the fixture's 120 training images less 20 held out, at batch 16
EXPERIMENT_SET = {"degradation": [
    "depths=8", "seeds=0", "width=4", "epochs=1", "train_size=64", "val_size=20",
    "test_size=20", "batch_size=32", "log_every=2", "quiet=true"]}
INTERRUPTED = {  # stopped by Ctrl-C after this step: the command below continues after Ctrl-C
    "reslab train --model resnet20 --epochs 30 --lr 0.1 --out runs/r20": 2}
NOT_COMPARED = [
    r"^\s*\.\.\.$",  # an elision
    r"^  found in  ",  # the machine's data folder
    # `reslab runs`'s table: its rows, and so its columns' widths, are the folder's runs
    # (tests/test_runs.py checks the table)
    r"^run\s+state\s+model", r"^-+(  -+)+$", r"^\S+\s+(finished|interrupted|running|damaged)\s",
]
DATA_DEPENDENT = [  # compared with numbers, class names and precision masked
    r" \| ",  # a run's header line
    r"^epoch \d+/\d+ ", r"^test accuracy ", r"^resumed ", r"stopped by SIGINT",
    r"these cannot change", r"^head: replaced", r"^normalisation: ",
    r"^test\d\.png: ", r'^\{"path": ', r" on test: accuracy ", r"^  \S.*  \d\.\d{4}$",
    r"^wrote \S+\.onnx: ", r"^onnxruntime: accuracy ", r"^wrote \S+: timm architecture ",
    r"^(ankle-boot|pullover|trouser)\.png: ",
    r"^(note: )?preset \S+: its levers ", r"^(note: )?lr [\d.]+: the recipe's ",  # batch 16
    r"^FitResult: ", r"^\[<Prediction ", r"^EvalResult\(",
    r"^  (train|val|test|mean|std) ",  # `data info`'s rows
]
CLASSES = sorted(idx.FASHION_MNIST.classes, key=len, reverse=True)  # T-shirt/top before Shirt
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
CLASS = re.compile("|".join(map(re.escape, CLASSES)))


def mask(line: str) -> str:
    if not any(re.search(p, line) for p in DATA_DEPENDENT):
        return line
    line = re.sub(r"\b(bf16|fp32)\b", "<precision>", CLASS.sub("<class>", line))
    line = NUMBER.sub("#", line)
    return re.sub(r"# (epoch|step|thread)s?\b", r"# \1s", line)  # the counts' plurals


# ---------------------------------------------------------------- README.md, parsed


@dataclass
class Step:
    """One thing a README reader runs: a shell command or a Python block."""
    line: int
    kind: str  # "shell", "python" or "doctest"
    text: str
    pasted: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"L{self.line}:{self.text.splitlines()[0][:60]}"


def parse(text: str) -> list[Step]:
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    last_python_end = None
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence[1], i + 1
        end = lines.index("```", start)
        body = lines[start:end]
        if lang == "sh":
            steps += [Step(start + k + 1, "shell", s.strip()) for k, s in enumerate(body)
                      if s.strip()]
        elif lang in ("text", "console"):
            commands = [k for k, s in enumerate(body) if s.startswith("$ ")]
            if not commands:  # the output of the Python block just above
                assert last_python_end == i - 1, f"README.md:{i + 1}: output of what?"
                steps[-1].pasted = body
            for n, k in enumerate(commands):
                stop = commands[n + 1] if n + 1 < len(commands) else len(body)
                steps.append(Step(start + k + 1, "shell", body[k][2:], body[k + 1:stop]))
        elif lang == "python":
            kind = "doctest" if body[0].startswith(">>> ") else "python"
            pasted = [s for s in body if not s.startswith(">>> ")] if kind == "doctest" else []
            steps.append(Step(start + 1, kind, "\n".join(body), pasted))
            last_python_end = end
        i = end + 1
    return steps


STEPS = parse(README.read_text())


def skipped(step: Step) -> str | None:
    """Why a step is not run, or None."""
    if step.kind == "python":
        return SKIPPED_PYTHON.get(step.text.splitlines()[0].strip())
    return SKIPPED.get(typed(step))


def typed(step: Step) -> str:
    """The command without its comment."""
    return " ".join(shlex.split(step.text, comments=True))


def commands(step: Step) -> list[str]:
    text = step.text.split(" #")[0].strip() if "|" in step.text else typed(step)
    return EXPANDED.get(text, [text])


# ---------------------------------------------------------------- running them


def shrink(args: list[str]) -> list[str]:
    """A README command at the fixtures' scale (the module docstring's rules)."""
    args = [EPOCHS.get(a, a) if i and args[i - 1] == "--epochs" else
            SUBSET if i and args[i - 1] == "--train-subset" else a
            for i, a in enumerate(args)]
    if args[0] == "train" and "--resume" not in args:
        args += [] if "--batch-size" in args else ["--batch-size", str(BATCH)]
        args += [] if "--epochs" in args else ["--epochs", "1"]  # a preset's 4 to 10
        if "--preset" in args and args[args.index("--preset") + 1] == "d2l":
            args += ["--resize", "32"]
    if args[0] == "experiment" and "--set" not in args:
        args += ["--set", *EXPERIMENT_SET.get(args[1], [])]
    return args


@contextlib.contextmanager
def ctrl_c_after(step: int):
    """SIGINT, as Ctrl-C sends it, once the run's optimizer step ``step`` is taken."""
    real = LOOP.train_step

    def step_then_interrupt(state, x, y):
        result = real(state, x, y)
        # only where the run's handler is installed: pytest's own would stop the session
        if state.counters.step == step and \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            signal.raise_signal(signal.SIGINT)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LOOP, "train_step", step_then_interrupt)
        yield


@dataclass
class Ran:
    codes: list[int]
    out: str
    err: str = ""
    commands: list[str] = field(default_factory=list)
    values: list[tuple[str, str]] = field(default_factory=list)  # (repr, the README's comment)


def run_shell(step: Step) -> Ran | None:
    text = typed(step)
    if text in SKIPPED:
        return None
    outs, errs, codes, ran = [], [], [], []
    for command in commands(step):
        argv = shlex.split(command)
        assert argv[0] == "reslab", f"README.md:{step.line}: neither run nor skipped: {command}"
        args = shrink(argv[1:])
        interrupt = contextlib.nullcontext()
        stopped = [line for line in step.pasted if "stopped by SIGINT" in line]
        if stopped:
            epoch = int(re.search(r"at epoch (\d+)", stopped[0])[1])
            interrupt = ctrl_c_after((epoch - 1) * STEPS_PER_EPOCH + 1)
        elif command in INTERRUPTED:
            interrupt = ctrl_c_after(INTERRUPTED[command])
        with interrupt, reslab_logs() as logs:
            result = cli(*args)
        result.err += logs.getvalue()
        outs.append(result.out)
        errs.append(result.err)
        codes.append(result.code)
        ran.append(shlex.join(["reslab", *args]))
    return Ran(codes, "".join(outs), "".join(errs), ran)


@contextlib.contextmanager
def reslab_logs():
    """reslab's log lines (``resumed ...``), on stderr for a user; in-process, pytest's
    handler on the root logger keeps ``reslab.cli``'s basicConfig from adding one."""
    buffer, handler = io.StringIO(), logging.StreamHandler()
    handler.setStream(buffer)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("reslab")
    logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


def shrunk_train(real):
    def train(*args, **options):
        if "epochs" in options:
            options["epochs"] = API_EPOCHS.get(options["epochs"], options["epochs"])
        if "resume" not in options:
            options.pop("train_subset", None)  # the fixture's 100 images are fewer
            options.setdefault("batch_size", BATCH)
            options.setdefault("epochs", 1)
        return real(*args, **options)
    return train


def pasted_values(source: str) -> list[tuple[ast.expr, str]]:
    """(expression, the value its ``# ...`` comment shows) for each such expression."""
    lines = source.splitlines()
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Expr):
            continue
        last = lines[node.end_lineno - 1]
        comment = [last[node.end_col_offset:].strip().removeprefix("#").strip()]
        following = lines[node.end_lineno:]
        for line in following:
            if not line.lstrip().startswith("#"):
                break
            comment.append(line.strip().removeprefix("#").strip())
        comment = " ".join(c for c in comment if c)
        if re.match(r"[\[({]|[A-Z]\w*\(", comment):
            found.append((node.value, comment))
    return found


def run_python(step: Step) -> Ran:
    source = step.text.replace("compile=True", "compile=False")
    # what the blocks assume a reader has at hand: a batch of (normalised) images and labels
    namespace = {"__name__": __name__, "images": torch.randn(8, 1, 28, 28),
                 "labels": torch.arange(8) % 10}
    if "class Width(Experiment)" in source:  # a fragment: the names it uses, imported
        exec("from dataclasses import dataclass\n"
             "from reslab.experiments.protocol import (Analysis, Experiment, PlannedRun,\n"
             "    TrainingSettings, setting)\n"
             "from reslab.experiments.common import cifar_spec, paper_recipe, seeded\n",
             namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(source, f"README.md:{step.line}", "exec"), namespace)
        values = [(eval(compile(ast.Expression(node), "README.md", "eval"), namespace), shown)
                  for node, shown in pasted_values(source)]
    return Ran([0], out.getvalue(), values=[(repr(v), shown) for v, shown in values])


def run_doctest(step: Step) -> Ran:
    """``>>> `` lines run one by one; what each prints (a value's repr) gathered as the output."""
    namespace: dict = {"reslab": reslab}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        for line in step.text.splitlines():
            if not line.startswith(">>> "):
                continue
            code = line[4:]
            try:
                value = eval(compile(code, "README.md", "eval"), namespace)
            except SyntaxError:
                exec(compile(code, "README.md", "exec"), namespace)
                continue
            if value is not None:
                print(repr(value))
    return Ran([0], out.getvalue())


def write_user_files(fixtures, folder: Path) -> None:
    """USER_FILES: what the README's commands refer to, made from the fixtures."""
    test = dataset.load_dataset("fashion-mnist").test.images
    for name, i in [("shoe.png", 0), ("shirt.jpg", 1), ("test0.png", 0), ("test1.png", 1),
                    ("ankle-boot.png", 0), ("pullover.png", 1), ("trouser.png", 2)]:
        Image.fromarray(test[i, 0].numpy(), mode="L").save(folder / name)
    torch.manual_seed(0)
    torch.save(reslab.create_model("resnet18").state_dict(), folder / "resnet18.pth")
    os.link(folder / "resnet18.pth", folder / "resnet18-f37072fd.pth")  # the same weights
    shutil.copytree(fixtures["rgb"], folder / "photos")
    for split in ("train", "test"):  # three classes, as the README's shoes
        for label in range(3):
            shutil.copytree(fixtures["grey"] / split / f"class{label}",
                            folder / "runs" / "shoes" / split / f"class{label}")


USER_FILES = ["shoe.png", "shirt.jpg", "test0.png", "test1.png", "ankle-boot.png",
              "pullover.png", "trouser.png", "resnet18.pth",
              "resnet18-f37072fd.pth", "photos/", "runs/shoes/"]


def _text(step: Step) -> str:
    return " ".join(commands(step)) if step.kind == "shell" else step.text


def _slow_steps() -> set[str]:
    """The ids of the steps that train or read what a training run left: the README's runs/,
    the run listing, and anything an earlier such step wrote (``export runs/r18 --folder
    r18-timm`` makes ``r18-timm``, which ``predict r18-timm`` then reads)."""
    slow, made = set(), set()
    for step in STEPS:
        text = _text(step)
        refused = step.pasted and all(line.startswith("reslab: error:") for line in step.pasted)
        reads_made = any(re.search(rf"(^|\s){re.escape(path)}(\s|/|$)", text) for path in made)
        if refused and "runs/" not in text and not reads_made:  # refused before any work
            continue
        if reads_made or re.search(
                r"reslab train\b|reslab\.train\(|runs/|reslab runs\b|--quick|data show|grow",
                text):
            slow.add(step.id)
            made |= set(re.findall(r"--(?:out|folder|onnx) (\S+)", text))
    return slow


def trains(step: Step) -> bool:
    """Whether a step trains or reads what a training run left (``_slow_steps``)."""
    return step.id in SLOW


SLOW = _slow_steps()


class Runner:
    """Runs README steps on demand in one folder: a step that trains (slow) after every
    earlier one that does, in README order, for it may read their runs; the others alone."""

    def __init__(self, fixtures, folder: Path):
        self.fixtures, self.folder = fixtures, folder
        self.results: dict[str, Ran | BaseException | None] = {}

    @contextlib.contextmanager
    def environment(self):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RESLAB_DATA", str(self.fixtures["root"]))
            patch.setattr(dataset, "DEFAULT_VAL_SIZE", 20)
            patch.setattr(reslab, "train", shrunk_train(reslab.train))
            patch.chdir(self.folder)
            yield

    def __call__(self, step: Step) -> Ran | BaseException | None:
        before = [s for s in STEPS[:STEPS.index(step)] if trains(s)] if trains(step) else []
        for todo in [*before, step]:
            if todo.id not in self.results:
                with self.environment():
                    self.results[todo.id] = self.run(todo)
        return self.results[step.id]

    @staticmethod
    def run(step: Step) -> Ran | BaseException | None:
        if skipped(step):
            return None
        try:
            if step.kind == "shell":
                return run_shell(step)
            return run_doctest(step) if step.kind == "doctest" else run_python(step)
        except Exception as error:  # noqa: BLE001 - reported by the step's test
            return error


@pytest.fixture(scope="module")
def runner(fixtures, tmp_path_factory, one_thread) -> Runner:
    root = tmp_path_factory.mktemp("readme")
    (root / "user").mkdir()
    runner = Runner(fixtures, root / "user")
    with isolated_env(fixtures, root / "home"), runner.environment():
        write_user_files(fixtures, root / "user")
    return runner


# ---------------------------------------------------------------- the tests


def test_the_readme_has_the_blocks_this_file_parses():
    kinds = {s.kind for s in STEPS}
    assert kinds == {"shell", "python", "doctest"}
    assert sum(s.kind == "shell" for s in STEPS) >= 30
    assert all(typed(s) in SKIPPED or commands(s)[0].startswith("reslab ")
               for s in STEPS if s.kind == "shell"), "a README command neither run nor skipped"
    listed = {typed(s) for s in STEPS if s.kind == "shell"}
    assert set(SKIPPED) <= listed, "SKIPPED names a command the README no longer has"
    assert {k for k in EXPANDED} <= {s.text.split(" #")[0].strip() for s in STEPS}


@pytest.mark.parametrize("step", [
    pytest.param(s, marks=[pytest.mark.slow] if trains(s) else [], id=s.id) for s in STEPS])
def test_readme_step(step, runner):
    result = runner(step)
    if result is None:
        pytest.skip(skipped(step))
    if isinstance(result, BaseException):
        raise result
    failed = any(line.startswith(("reslab: error:", "reslab: stopped by"))
                 for line in step.pasted)
    failed = failed or typed(step) in INTERRUPTED
    codes = [0] * (len(result.codes) - 1) + [1 if failed else 0]  # expanded: each must pass
    assert [min(code, 1) for code in result.codes] == codes, (step.text, result)
    printed = {mask(line) for line in (result.out + result.err).splitlines()}
    for line in step.pasted:
        if any(re.search(p, line) for p in NOT_COMPARED):
            continue
        assert mask(line) in printed, (
            f"README.md:{step.line} pastes a line `{' '.join(result.commands) or 'the block'}` "
            f"does not print:\n{line}\n--- it printed:\n{result.out}{result.err}")
    for value, shown in result.values:  # the comment's value: up to a `;` that goes on in words
        assert " ".join(value.split()) == " ".join(shown.split(";")[0].split()), (value, shown)
