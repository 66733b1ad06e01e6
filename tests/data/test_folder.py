"""Image folders: classes from folder names, splits, skipped images, refused bombs."""

import logging

import pytest
import torch
from PIL import Image

from reslab.data import FileSplit, Split, load_dataset
from reslab.data.folder import decode_image
from reslab.errors import ConfigError, CorruptDataError, DataNotFoundError, UnknownNameError


def save_image(path, color, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_classes_images_and_one_warning_for_skipped(image_folder, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_dataset(image_folder, val_size=0, image_size=8)

    assert data.name == f"folder:{image_folder}"
    assert data.classes == ("cats", "dogs")
    assert isinstance(data.train, Split)
    assert data.train.images.shape == (5, 3, 8, 8)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert len(data.test) == 0 and data.test.images.shape == (0, 3, 8, 8)
    # Solid colours survive decoding and resizing exactly.
    assert data.train.images[0, :, 0, 0].tolist() == [200, 0, 0]
    assert data.train.images[4, :, 3, 5].tolist() == [0, 0, 250]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "skipped 2 unreadable image(s)" in text
    assert "corrupt.png" in text and "truncated.png" in text
    assert len(data.source.skipped) == 2


def test_grey_conversion_and_folder_prefix(image_folder):
    data = load_dataset(f"folder:{image_folder}", val_size=1, image_size=6, channels=1)
    assert data.train.images.shape == (4, 1, 6, 6) and len(data.val) == 1
    assert len(data.mean) == 1 and len(data.std) == 1


def test_channels_and_size_are_validated(image_folder):
    with pytest.raises(ConfigError, match="channels must be 1 .grey. or 3 .RGB., got 2"):
        load_dataset(image_folder, channels=2)
    with pytest.raises(ConfigError, match=r"image_size must be in 1\.\.\.2048, got 100000"):
        load_dataset(image_folder, image_size=100_000)  # refused before 30 GB per image
    with pytest.raises(ConfigError, match=r"image_size must be in 1\.\.\.2048, got 0"):
        load_dataset(image_folder, image_size=0)


def test_train_val_test_folders(tmp_path):
    root = tmp_path / "set"
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(count):
                save_image(root / split / cls / f"{i}.png", (i * 20, 0, 0), size=(12, 10))
    data = load_dataset(root, image_size=4)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 6)
    assert data.classes == ("a", "b")
    assert data.val.labels.tolist() == [0, 0, 1, 1]
    assert "val" in data.source.val_origin


def test_val_class_unknown_to_train(tmp_path):
    save_image(tmp_path / "set" / "train" / "a" / "0.png", (1, 2, 3))
    save_image(tmp_path / "set" / "val" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(CorruptDataError, match="zebra not in the training classes"):
        load_dataset(tmp_path / "set")


def test_empty_class_is_an_error(image_folder):
    (image_folder / "birds").mkdir()
    with pytest.raises(CorruptDataError, match=r"birds hold no readable image"):
        load_dataset(image_folder)


def test_class_with_only_unreadable_images_is_an_error(image_folder):
    for path in (image_folder / "dogs").glob("dog*"):
        path.unlink()
    with pytest.raises(CorruptDataError, match=r"dogs hold no readable image"):
        load_dataset(image_folder)


def test_no_images_at_all(tmp_path):
    (tmp_path / "set" / "a").mkdir(parents=True)
    (tmp_path / "set" / "a" / "readme.txt").write_text("no images here")
    with pytest.raises(DataNotFoundError, match="no images found"):
        load_dataset(tmp_path / "set")


def test_no_class_folders(tmp_path):
    save_image(tmp_path / "flat" / "0.png", (0, 0, 0))
    with pytest.raises(DataNotFoundError, match="no class folders"):
        load_dataset(tmp_path / "flat")


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(UnknownNameError, match="did you mean cifar10"):
        load_dataset("cifar-1O")


def test_decompression_bomb_refused(image_folder, monkeypatch, caplog):
    save_image(image_folder / "cats" / "huge.png", (0, 0, 0), size=(300, 300))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200 * 200)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(image_folder, val_size=0, image_size=8)
    assert len(data.train) == 5
    assert any("huge.png: refused, possible decompression bomb" in s for s in data.source.skipped)
    # Far past the limit Pillow itself raises; that is refused the same way.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(CorruptDataError, match="decompression bomb"):
        decode_image(image_folder / "cats" / "huge.png", 8, 3)


def test_on_disk_split_gives_the_same_batches(image_folder):
    (image_folder / "dogs" / "truncated.png").unlink()
    in_memory = load_dataset(image_folder, val_size=2, image_size=8)
    on_disk = load_dataset(image_folder, val_size=2, image_size=8, in_memory=False)
    assert isinstance(on_disk.train, FileSplit) and len(on_disk.train) == 3
    assert on_disk.mean == pytest.approx(in_memory.mean)
    assert on_disk.std == pytest.approx(in_memory.std)
    for workers in (0, 2):
        a = list(in_memory.loader("train", 2, num_workers=workers))
        b = list(on_disk.loader("train", 2, num_workers=workers))
        assert len(a) == len(b) == 1
        assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])


def test_on_disk_truncated_image_is_named(image_folder):
    # Headers are checked up front (the corrupt file is skipped); the mean/std pass decodes the
    # truncated one and stops with its name.
    with pytest.raises(CorruptDataError, match=r"truncated\.png: unreadable image"):
        load_dataset(image_folder, val_size=0, image_size=8, in_memory=False)
    (image_folder / "dogs" / "truncated.png").unlink()
    on_disk = load_dataset(image_folder, val_size=0, image_size=8, in_memory=False)
    assert len(on_disk.source.skipped) == 1 and len(on_disk.train) == 5
    # An image damaged later stops the batch that reads it.
    dog = image_folder / "dogs" / "dog1.jpg"
    dog.write_bytes(dog.read_bytes()[:100])
    with pytest.raises(CorruptDataError, match=r"dog1\.jpg: unreadable image"):
        list(on_disk.loader("train", 5, num_workers=0))


def class_folders(root, per_class: int = 20):
    """Only class folders (no train/ or test/): the layout most photo collections have."""
    for label, color in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        for i in range(per_class):
            save_image(root / f"class{label}" / f"{i:02d}.png", (color[0], color[1], i))
    return root


def test_a_folder_without_test_holds_a_fixed_test_split_out(tmp_path):
    root = class_folders(tmp_path / "photos")
    data = load_dataset(root, image_size=4, seed=0)
    # of 60 images: 6 test, then 5 val (10% of 54)
    assert (len(data.train), len(data.val), len(data.test)) == (49, 5, 6)
    assert "no test/ folder" in data.source.test_origin
    # The same test images whatever the run's seed (its val and train split differ).
    other = load_dataset(root, image_size=4, seed=7)
    assert torch.equal(other.test.images, data.test.images)
    assert not torch.equal(other.val.images, data.val.images)
    # Every image is in exactly one split.
    def keys(split):
        return {(int(lbl), int(img[2, 0, 0])) for img, lbl in zip(split.images, split.labels,
                                                                  strict=True)}
    all_keys = [keys(data.train), keys(data.val), keys(data.test)]
    assert sum(map(len, all_keys)) == 60 and len(set().union(*all_keys)) == 60


def test_a_folder_with_test_keeps_it(tmp_path):
    root = tmp_path / "photos"
    class_folders(root / "train")
    class_folders(root / "test", per_class=2)
    data = load_dataset(root, image_size=4)
    assert (len(data.train) + len(data.val), len(data.test)) == (60, 6)
    assert data.source.test_origin == ""
