"""``reslab data info`` and ``reslab data show``, run in-process on generated data."""

from PIL import Image

from reslab.cli import main


def test_info_reports_location_counts_classes_and_checksum(tmp_path, make_fashion, capsys):
    make_fashion(tmp_path / "fm", n_train=60, n_test=20)
    code = main(["data", "info", "fashion-mnist", "--data-dir", str(tmp_path / "fm"),
                 "--val-size", "12"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"found in  {tmp_path / 'fm'}" in out
    assert "checksum  SHA-256 verified" in out
    assert "train     48\n" in out and "val       12  (held out from train, seed 0)" in out
    assert "test      20\n" in out
    assert "T-shirt/top, Trouser, Pullover" in out and "Ankle boot" in out
    assert "mean      0.4" in out  # uniform random bytes: about 127.5 / 255


def test_info_on_an_image_folder(image_folder, capsys):
    assert main(["data", "info", str(image_folder), "--val-size", "0", "--channels", "1"]) == 0
    out = capsys.readouterr().out
    assert "images    1x32x32 uint8, 2 classes" in out
    assert "classes   cats, dogs" in out and "skipped   2 unreadable image(s)" in out


def test_show_writes_a_png_grid(tmp_path, make_fashion, capsys):
    make_fashion(tmp_path / "fm", n_train=60)
    out = tmp_path / "plots" / "grid.png"
    code = main(["data", "show", "fashion-mnist", "--data-dir", str(tmp_path / "fm"),
                 "--val-size", "10", "--out", str(out), "--augmented", "--count", "12"])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 100
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temporary file left


def test_show_test_split_resized(tmp_path, make_cifar):
    make_cifar(tmp_path / "c10", "cifar10", extracted=True)
    out = tmp_path / "grid.png"
    assert main(["data", "show", "cifar10", "--data-dir", str(tmp_path / "c10"), "--val-size",
                 "5", "--out", str(out), "--split", "test", "--resize", "48"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_errors_are_one_line_and_exit_1(tmp_path, make_fashion, capsys):
    assert main(["data", "info", "fashon-mnist"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reslab: error: unknown data set 'fashon-mnist'")
    assert "did you mean fashion-mnist" in err and err.count("\n") == 1

    make_fashion(tmp_path / "fm")
    assert main(["data", "show", "fashion-mnist", "--data-dir", str(tmp_path / "fm"),
                 "--val-size", "5", "--out", str(tmp_path / "grid.jpg")]) == 1
    assert "must end in .png" in capsys.readouterr().err
    assert not (tmp_path / "grid.jpg").exists()

    assert main(["data", "info", "fashion-mnist"]) == 1  # nowhere, and the network is closed
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and err.count("\n") == 1
