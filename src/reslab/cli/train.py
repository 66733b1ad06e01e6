"""`reslab train`, `reslab eval`, `reslab predict`, `reslab export`."""

from __future__ import annotations

import argparse
import dataclasses
import json

from jsonargparse import ActionConfigFile, Namespace

from reslab.cli.parser import Parser
from reslab.errors import UnknownNameError
from reslab.training.config import PRESETS, TrainConfig, preset


class _PresetAction(argparse.Action):
    """``--preset NAME`` sets the preset's fields where it stands: later options override it,
    like ``--config``."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value not in PRESETS:
            try:
                preset(value)
            except UnknownNameError as error:  # one line, like every other reslab error
                parser.exit(2, f"reslab: error: {error}\n")
        for key, field_value in PRESETS[value].items():
            namespace[key] = list(field_value) if isinstance(field_value, tuple) else field_value
        namespace[self.dest] = value


def _dashed_aliases(parser: Parser) -> None:
    # dataclass fields are snake_case; the CLI spells them --batch-size (both are accepted)
    for action in parser._actions:
        for option in list(action.option_strings):
            if option.startswith("--") and "_" in option:
                dashed = option.replace("_", "-")
                action.option_strings.insert(0, dashed)
                parser._option_string_actions[dashed] = action


def register(subcommands) -> dict:
    train = Parser(description="Train a model. Defaults: the `fast` preset.")
    subcommands.add_subcommand("train", train, help="train a model (default: fast preset)")
    train.add_argument("--config", action=ActionConfigFile, help="a YAML/JSON config file")
    train.add_argument("--preset", action=_PresetAction, default=None,
                       help=f"start from a recipe ({', '.join(PRESETS)}); later options override")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue a run from its last checkpoint, with its own config")
    train.add_class_arguments(TrainConfig, as_group=False)
    _dashed_aliases(train)

    evaluate = Parser(description="Evaluate a checkpoint or run directory.")
    subcommands.add_subcommand("eval", evaluate, help="accuracy, per-class accuracy, confusion")
    evaluate.add_argument("checkpoint", help="a .safetensors checkpoint or a run directory")
    evaluate.add_argument("--data", default=None, help="data set (default: the one trained on)")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--confusion", default=None, metavar="PNG",
                          help="also write the confusion matrix here")
    evaluate.add_argument("--json", action="store_true")

    predict = Parser(description="Top-k classes of image files.")
    subcommands.add_subcommand("predict", predict, help="classify image files")
    predict.add_argument("checkpoint")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true")

    export = Parser(description="Export to ONNX, verified with onnxruntime.")
    subcommands.add_subcommand("export", export, help="export a checkpoint to ONNX")
    export.add_argument("checkpoint")
    export.add_argument("--onnx", required=True, metavar="OUT")
    export.add_argument("--opset", type=int, default=17)
    return {"train": run_train, "eval": run_eval, "predict": run_predict, "export": run_export}


def run_train(ns: Namespace) -> int:
    from reslab.training.fit import train

    if ns.resume:
        result = train(resume=ns.resume, quiet=ns.quiet)
    else:
        values = {f.name: ns[f.name] for f in dataclasses.fields(TrainConfig)}
        if ns.preset and values["warmup_lr"] is None:  # a preset's own rules, as preset() has
            values["warmup_lr"] = preset(ns.preset, model=values["model"]).warmup_lr
        result = train(TrainConfig(**values))
    test = result.test
    if not test:  # torchrun: ranks other than 0 neither evaluate nor report
        return 0
    chosen = ("the last epoch, no validation split" if test["best_val_acc"] is None
              else f"chosen by validation accuracy {test['best_val_acc']:.4f}")
    print(f"test accuracy {test['accuracy']:.4f} on {test['images']:,} images "
          f"(model of epoch {test['best_epoch']}, {chosen}); "
          f"{test['train_seconds']:.0f} s of training")
    print(f"run directory: {result.run_dir}")
    return 0


def run_eval(ns: Namespace) -> int:
    from reslab.deploy import evaluate_checkpoint
    from reslab.training.rundir import plot_confusion

    result, meta = evaluate_checkpoint(ns.checkpoint, ns.data, split=ns.split,
                                       data_dir=ns.data_dir)
    per_class = result.per_class(meta["classes"])
    if ns.confusion:
        plot_confusion(result.confusion, meta["classes"], __import__("pathlib").Path(
            ns.confusion), f"{meta['model']}: {ns.split} accuracy {result.accuracy:.4f}")
    if ns.json:
        print(json.dumps({"accuracy": result.accuracy, "loss": result.loss,
                          "images": result.count, "per_class": per_class,
                          "confusion": result.confusion.tolist()}, indent=2))
        return 0
    print(f"{meta['model']} on {ns.split}: accuracy {result.accuracy:.4f}, loss "
          f"{result.loss:.4f}, {result.count:,} images")
    width = max(len(c) for c in per_class)
    for name, accuracy in per_class.items():
        print(f"  {name:<{width}}  {accuracy:.4f}")
    return 0


def run_predict(ns: Namespace) -> int:
    from reslab.deploy import predict_files

    predictions = predict_files(ns.checkpoint, ns.images, top_k=ns.top_k)
    if ns.json:
        print(json.dumps([dataclasses.asdict(p) for p in predictions], indent=2))
    else:
        for p in predictions:
            if p.error:
                print(f"{p.path}: error: {p.error}")
            else:
                print(f"{p.path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in p.top))
    return 1 if any(p.error for p in predictions) else 0


def run_export(ns: Namespace) -> int:
    from reslab.deploy import export_onnx

    info = export_onnx(ns.checkpoint, ns.onnx, opset=ns.opset)
    print(f"wrote {info['path']} (input batch x {'x'.join(map(str, info['input']))}); "
          f"onnxruntime vs PyTorch max abs difference {info['max_abs_diff']:.2e}")
    return 0
