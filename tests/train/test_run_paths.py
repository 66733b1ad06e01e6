"""What a user meets around a run: the start line tells what is trained on (a subset, one
epoch, one step), resuming a finished run refuses without touching a file of it, a run folder
starts a new run, and predict walks a folder of class folders."""

import contextlib
import hashlib
import io
import json

import pytest

import reslab
from reslab.cli import main

OPTIONS = dict(model="resnet14", image_size=16, channels=1, val_size=40, batch_size=32,
               train_subset=32, epochs=1, precision="fp32", lr=0.05)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, image_folder):
    """A finished run of 1 epoch of 1 step on 32 of the folder's 260 training images, and
    the progress it showed."""
    out = tmp_path_factory.mktemp("paths") / "run"
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        reslab.train(data=f"folder:{image_folder}", out=str(out), **OPTIONS)
    return out, shown.getvalue()


def test_the_start_line_shows_the_subset_trained_on_and_singular_counts(finished):
    _, shown = finished
    start = next(line for line in shown.splitlines() if line.startswith("resnet14: "))
    assert ": 32 train (subset of 260) / 40 val / 60 test images, 1x16x16 |" in start
    assert "| 1 epoch of 1 step |" in start


def _hashes(run):
    return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", [[], ["--epochs", "1"]])
def test_resuming_a_finished_run_refuses_and_leaves_every_file_as_it_was(finished, capsys,
                                                                         extra):
    run, _ = finished
    before = _hashes(run)
    assert main(["train", "--resume", str(run), "--quiet", *extra]) == 1
    err = capsys.readouterr().err
    assert err == (f"reslab: error: {run} already finished its 1 epoch; `--epochs M` (M > 1) "
                   "extends it\n")
    assert _hashes(run) == before


def test_init_from_takes_a_run_folder_as_eval_and_predict_do(finished, image_folder, tmp_path):
    run, _ = finished
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        result = reslab.train(data=f"folder:{image_folder}", out=str(tmp_path / "next"),
                              init_from=str(run), **OPTIONS)
    best = run / "checkpoints" / "best.safetensors"
    assert f"init: weights from {best} (reslab checkpoint of resnet14" in shown.getvalue()
    assert result.test["images"] == 60


@pytest.mark.parametrize("where", ["run", "run/inside", "checkpoint in run"])
def test_a_new_run_may_not_go_into_the_run_it_starts_from(finished, image_folder, capsys,
                                                          where):
    run, _ = finished
    source = run / "checkpoints" / "best.safetensors" if where.startswith("checkpoint") else run
    out = run / "inside" if where == "run/inside" else run
    before = _hashes(run)
    assert main(["train", "--init-from", str(source), "--out", str(out), "--data",
                 f"folder:{image_folder}", "--model", "resnet14", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"reslab: error: --out {out} is inside ") and "an input of this run" \
        in err and err.count("\n") == 1
    assert _hashes(run) == before and not (run / "inside").exists()


def test_predict_walks_a_folder_of_class_folders_in_order(finished, image_folder, capsys):
    run, _ = finished
    assert main(["predict", str(run), str(image_folder / "test"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = sorted((image_folder / "test").glob("class*/*.png"))
    assert len(lines) == len(expected) == 60
    assert [line.rsplit(": ", 1)[0] for line in lines] == [str(p) for p in expected]


def test_predict_leaves_out_hidden_files_other_files_and_links_out_of_the_folder(
        finished, image_folder, tmp_path, capsys, caplog):
    run, _ = finished
    images = sorted((image_folder / "test" / "class1").glob("*.png"))
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "one.png").write_bytes(images[0].read_bytes())
    (folder / "two.PNG").write_bytes(images[1].read_bytes())
    (folder / "a" / "same.png").symlink_to(folder / "two.PNG")  # inside: kept
    (folder / ".hidden.png").write_bytes(images[2].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "out.png").symlink_to(images[3])  # a file outside: left out
    (folder / "elsewhere").symlink_to(image_folder / "test")  # a folder outside: not walked
    assert main(["predict", str(run), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    paths = [json.loads(line)["path"] for line in captured.out.splitlines()]
    assert paths == [str(folder / "a" / "one.png"), str(folder / "a" / "same.png"),
                     str(folder / "two.PNG")]
    assert f"left out {folder / 'out.png'}: a link to a file outside {folder}" in caplog.text


def test_predict_refuses_folders_past_the_bound_before_any_output(finished, image_folder,
                                                                  capsys, monkeypatch):
    run, _ = finished
    monkeypatch.setattr("reslab.deploy.MAX_PREDICT_IMAGES", 25)
    assert main(["predict", str(run), str(image_folder / "test")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"reslab: error: {image_folder / 'test'}: more than 25 images to "
                            "predict with the ones before it, more than one predict takes; give "
                            "a smaller folder, or its subfolders in turn\n")


def test_predict_says_a_folder_holds_no_images(finished, tmp_path, capsys):
    run, _ = finished
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["predict", str(run), str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err == (f"reslab: error: {tmp_path / 'empty'}: no image files in "
                                       "this folder or its subfolders (such as .png or .jpg)\n")


def test_extending_a_finished_run_says_the_rate_it_trains_at(image_folder, tmp_path):
    """One-cycle ended at lr/25/1e4; the added epoch goes on from there, and says so."""
    run = tmp_path / "run"
    reslab.train(data=f"folder:{image_folder}", out=str(run),
                 **OPTIONS | dict(train_subset=128, quiet=True))  # 4 steps: a real one-cycle
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        reslab.train(resume=run, epochs=2, quiet=False)
    final = 0.05 / 25 / 1e4
    note = next(line for line in shown.getvalue().splitlines() if line.startswith("extension"))
    assert note == (f"extension: the onecycle schedule ended with the run, so the added steps "
                    f"train at lr {final:.2g} falling to {final:.2g}; for a fresh cycle start a "
                    f"new run from this one: reslab train --init-from {run} --lr X")
