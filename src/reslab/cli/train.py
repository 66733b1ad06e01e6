"""`reslab train`, `reslab eval`, `reslab predict`, `reslab export`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from argparse import Namespace

from reslab.cli.parser import add_config_options, given
from reslab.tables import count
from reslab.training.config import GROUPS, PRESETS, TrainConfig, preset, read_config_file

CHECKPOINT = "a .safetensors checkpoint, a run directory or a model folder"


def register(subcommands) -> dict:
    train = subcommands.add_parser(
        "train", help="train a model (default: the fast preset)",
        description="Train a model on a data set. Defaults: the `fast` preset. A preset and a "
        "config file set defaults; options on the command line win, whatever their order.")
    run = train.add_argument_group("run options")
    run.add_argument("--preset", choices=list(PRESETS), default=None,
                     help="start from a named recipe (default: fast)")
    run.add_argument("--config", metavar="FILE", default=None,
                     help="a YAML or JSON file of options (keys as in --print-config)")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved config as JSON and exit")
    run.add_argument("--resume", default=None, metavar="RUN",
                     help="continue a run (its directory, or a checkpoint in it) with its own "
                     "config; more --epochs extend it")
    add_config_options(train, TrainConfig, GROUPS, defaults=preset("fast"))

    evaluate = subcommands.add_parser("eval", help="accuracy, per-class accuracy, confusion",
                                      description="Evaluate a checkpoint or run directory.")
    evaluate.add_argument("checkpoint", help=CHECKPOINT)
    evaluate.add_argument("--data", default=None, help="data set (default: the one trained on)")
    evaluate.add_argument("--data-dir", default=None,
                          help="folder to look in first for a built-in data set's files")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"],
                          help="which split to evaluate (default: test)")
    evaluate.add_argument("--confusion", default=None, metavar="PNG",
                          help="also write the confusion matrix here")
    evaluate.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                          help="print JSON instead of a table")

    predict = subcommands.add_parser("predict", help="classify image files",
                                     description="Top-k classes of image files.")
    predict.add_argument("checkpoint", help=CHECKPOINT)
    predict.add_argument("images", nargs="+", help="image files, or folders of them")
    predict.add_argument("--top-k", type=int, default=3, help="classes to show (default: 3)")
    predict.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                         help="print one JSON object per image per line (JSON Lines)")

    export = subcommands.add_parser(
        "export", help="export a checkpoint to ONNX, or to a folder timm loads",
        description="Export to ONNX (verified with onnxruntime), or to a model folder "
        "(config.json, model.safetensors, README.md) that timm.create_model('local-dir:DIR', "
        "pretrained=True) and the Hugging Face hub load as it is.")
    export.add_argument("checkpoint", help="a .safetensors checkpoint, a run directory or a "
                        "model folder")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="OUT", help="the .onnx file to write")
    target.add_argument("--folder", metavar="DIR", help="the model folder to write (new, "
                        "empty, or one reslab exported before)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    export.add_argument("--include-normalization", action=argparse.BooleanOptionalAction,
                        default=None, help="the graph takes pixels in [0, 1] and normalises "
                        "them itself (default: it takes normalised input)")
    export.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average each image's probabilities with its mirror's in the "
                        "graph, as predict does (default: as the run evaluated)")
    return {"train": run_train, "eval": run_eval, "predict": run_predict, "export": run_export}


def resolve_options(ns: Namespace) -> tuple[str, dict]:
    """The preset and the fields on top of it: the config file's, then the options given."""
    options = read_config_file(ns.config) if ns.config else {}
    name = options.pop("preset", None) if ns.preset is None else ns.preset
    return name or "fast", options | given(ns, TrainConfig)


def run_train(ns: Namespace) -> int:
    from reslab.training.run import train

    if ns.resume:
        if ns.preset or ns.config:
            raise_config_error("--resume continues a run with its own config: leave out "
                               "--preset and --config")
        if ns.print_config:
            raise_config_error("--print-config with --resume: the run's config is in its "
                               "config.json")
        result = train(resume=ns.resume, **given(ns, TrainConfig))
    else:
        from reslab.training.config import preset

        name, options = resolve_options(ns)
        if ns.print_config:  # refused as the run would be, before it read any data
            from reslab.training.config import preset_notes
            from reslab.training.run import check_before_data

            config = check_before_data(preset(name, **options))
            for note in preset_notes(name, config, options):
                print(f"note: {note}", file=sys.stderr)
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        result = train(preset_name=name, **options)
    test = result.test
    if not test:  # torchrun: ranks other than 0 neither evaluate nor report
        return 0
    chosen = ("the last epoch, no validation split" if test["best_val_acc"] is None
              else f"chosen by validation accuracy {test['best_val_acc']:.4f}")
    print(f"test accuracy {test['accuracy']:.4f} on {count(test['images'], 'image')} "
          f"(model of epoch {test['best_epoch']}, {chosen}); "
          f"{test['train_seconds']:.0f} s of training")
    print(f"run directory: {result.run_dir}")
    return 0


def raise_config_error(message: str):
    from reslab.errors import ConfigError

    raise ConfigError(message)


def run_eval(ns: Namespace) -> int:
    from reslab.deploy import evaluate_checkpoint
    from reslab.paths import check_output, printable
    from reslab.runtime.checkpoint import resolve_checkpoint
    from reslab.runtime.run_folder import run_files
    from reslab.training.plots import plot_confusion

    checkpoint = resolve_checkpoint(ns.checkpoint)
    confusion = None
    if ns.confusion:  # checked before the evaluation's minutes
        data = [d.removeprefix("folder:") for d in (ns.data, ns.data_dir) if d]
        confusion = check_output(ns.confusion, "--confusion", suffix=".png",
                                 inputs=[*run_files(checkpoint), *data])
    result, meta = evaluate_checkpoint(checkpoint, ns.data, split=ns.split,
                                       data_dir=ns.data_dir)
    per_class = result.per_class(list(meta.classes))
    if confusion:
        plot_confusion(result.confusion, list(meta.classes), confusion,
                       f"{meta.model}: {ns.split} accuracy {result.accuracy:.4f}")
    if ns.json:
        print(json.dumps({"accuracy": result.accuracy, "loss": result.loss,
                          "images": result.count, "per_class": per_class,
                          "confusion": result.confusion.tolist()}, indent=2))
        return 0
    print(f"{printable(meta.model)} on {ns.split}: accuracy {result.accuracy:.4f}, loss "
          f"{result.loss:.4f}, {count(result.count, 'image')}")
    names = {printable(name): accuracy for name, accuracy in per_class.items()}
    width = max(map(len, names))
    for name, accuracy in names.items():
        print(f"  {name:<{width}}  {accuracy:.4f}")
    return 0


def run_predict(ns: Namespace) -> int:
    """Each result on stdout as soon as it is made (a line, or a JSON object per line with
    --json); an image that could not be read on stderr; exit 1 if any could not."""
    from reslab.deploy import iter_predictions
    from reslab.paths import printable

    failed = 0
    for p in iter_predictions(ns.checkpoint, ns.images, top_k=ns.top_k):
        failed += p.error is not None
        if p.error:
            print(f"reslab: error: {printable(p.error)}", file=sys.stderr)
        if ns.json:
            print(json.dumps(dataclasses.asdict(p), allow_nan=False), flush=True)
        elif not p.error:
            print(f"{printable(p.path)}: " + ", ".join(f"{printable(c)} {prob:.3f}"
                                                       for c, prob in p.top), flush=True)
    return 1 if failed else 0


# the options that shape an ONNX graph, which a model folder (weights as they are) has not
ONNX_ONLY = {"opset": "--opset", "include_normalization": "--include-normalization",
             "tta": "--tta"}


def run_export(ns: Namespace) -> int:
    if ns.folder:
        if given_onnx := [flag for key, flag in ONNX_ONLY.items()
                          if getattr(ns, key) is not None]:
            verb, them = ("shape", "them") if len(given_onnx) > 1 else ("shapes", "it")
            raise_config_error(f"{', '.join(given_onnx)} {verb} an ONNX graph; --folder writes "
                               f"the weights as they are: leave {them} out, or export --onnx")
        return _export_folder(ns)
    from reslab.export import export_onnx

    info = export_onnx(ns.checkpoint, ns.onnx, opset=17 if ns.opset is None else ns.opset,
                       include_normalization=bool(ns.include_normalization), tta_flip=ns.tta)
    meta = info["metadata"]
    print(f"wrote {info['path']}: input batch x {'x'.join(map(str, meta['input_size']))}, "
          f"{meta['input']}; output {meta['output']}; {len(meta['classes'])} class names, "
          f"mean/std and spec in its metadata. onnxruntime vs PyTorch max abs difference "
          f"{info['max_abs_diff']:.2e} ({info['max_rel_diff']:.1e} of the largest output)")
    return 0


def _export_folder(ns: Namespace) -> int:
    from reslab.hub import export_folder
    from reslab.paths import printable

    info = export_folder(ns.checkpoint, ns.folder)
    args = f" with model_args {json.dumps(info['model_args'])}" if info["model_args"] else ""
    test = (f"; test accuracy {info['test']['accuracy']:.4f} in its model card"
            if info["test"] else "")
    print(f"wrote {printable(info['path'])}: timm architecture {info['architecture']}{args}, "
          f"{info['classes']} classes, input {'x'.join(map(str, info['input_size']))}, "
          f"{info['tensors']} tensors{test}. Load it with "
          f"timm.create_model(\"local-dir:{printable(info['path'])}\", pretrained=True)")
    return 0
