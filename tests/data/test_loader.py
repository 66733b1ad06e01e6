"""BatchLoader and batch augmentation: exact values, determinism, resume, sharding, layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import AugmentConfig, BatchLoader, BatchTransform, Split
from reslab.data.augment import crop_flip
from reslab.errors import ConfigError

CROP_FLIP = AugmentConfig(crop_padding=2, flip=True)


def random_split(n=100, shape=(1, 8, 8), seed=0) -> Split:
    """Random images; label i is the image's index, so batches can be traced back."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)
    return Split(images, torch.arange(n))


def batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


def loader(split=None, **options) -> BatchLoader:
    defaults = {"batch_size": 16, "train": True, "mean": (0.5,), "std": (0.25,), "seed": 7}
    return BatchLoader(split if split is not None else random_split(), **{**defaults, **options})


def test_eval_batches_are_the_normalised_images_in_order():
    split = random_split(50)
    out = batches(loader(split, train=False, batch_size=16))
    assert [len(x) for x, _ in out] == [16, 16, 16, 2]  # drop_last defaults to train
    images = torch.cat([x for x, _ in out])
    expected = (split.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(images, expected, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in out]), torch.arange(50))
    assert images.dtype == torch.float32


def test_train_batches_shuffle_and_drop_the_last():
    out = batches(loader(batch_size=16))
    ids = torch.cat([y for _, y in out])
    assert len(out) == 6 and len(ids) == 96 and len(set(ids.tolist())) == 96
    assert not torch.equal(ids, torch.arange(96))


def test_same_seed_and_epoch_give_identical_batches():
    first = batches(loader(augment=CROP_FLIP), epoch=3)
    again = batches(loader(augment=CROP_FLIP), epoch=3)  # a fresh loader: no hidden state
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_other_epoch_or_seed_gives_other_batches():
    base = batches(loader(augment=CROP_FLIP), epoch=3)
    next_epoch = batches(loader(augment=CROP_FLIP), epoch=4)
    other_seed = batches(loader(augment=CROP_FLIP, seed=8), epoch=3)
    assert not torch.equal(base[0][1], next_epoch[0][1])
    assert not torch.equal(base[0][1], other_seed[0][1])


def test_augmentation_differs_per_epoch_for_the_same_image():
    # Without shuffling effects: one image repeated, so only augmentation can differ.
    split = Split(random_split(1).images.expand(32, 1, 8, 8).contiguous(), torch.zeros(32).long())
    a = batches(loader(split, augment=CROP_FLIP, batch_size=32), epoch=0)[0][0]
    b = batches(loader(split, augment=CROP_FLIP, batch_size=32), epoch=1)[0][0]
    assert not torch.equal(a, b)
    assert len({tuple(x.flatten().tolist()) for x in a}) > 5  # images in a batch differ too


def test_resume_mid_epoch_sees_the_same_batches():
    full = batches(loader(augment=CROP_FLIP), epoch=2)
    resumed = loader(augment=CROP_FLIP)
    resumed.set_epoch(2)
    rest = list(resumed.iter_from(4))
    assert len(rest) == len(full) - 4
    for (x1, y1), (x2, y2) in zip(full[4:], rest, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(ConfigError, match="step must be in 0...6"):
        resumed.iter_from(7)


@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_disjoint_with_equal_batch_counts(drop_last):
    split = random_split(103)
    world = 3
    shards = []
    for rank in range(world):
        shard = loader(split, batch_size=8, rank=rank, world_size=world, drop_last=drop_last)
        out = batches(shard, epoch=5)
        assert len(out) == len(shard)
        shards.append(torch.cat([y for _, y in out]).tolist())
    lengths = {len(batches(loader(split, batch_size=8, rank=r, world_size=world,
                                  drop_last=drop_last), epoch=5)) for r in range(world)}
    assert len(lengths) == 1  # all ranks take the same number of steps
    seen = [i for shard in shards for i in shard]
    assert len(seen) == len(set(seen))  # disjoint
    if drop_last:
        assert len(seen) == 3 * 32  # 34 images per rank, 4 full batches of 8
    else:
        assert sorted(seen) == list(range(103))  # the union is the whole epoch


def test_crop_flip_moves_and_mirrors_whole_images():
    images = random_split(64, shape=(2, 6, 7), seed=1).images
    out = crop_flip(images, padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    found = []
    for i in range(len(images)):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], _window(padded[i], dy, dx, f))]
        assert len(matches) == 1, f"image {i} is no shifted/mirrored copy"
        found.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 10
    assert {f for *_, f in found} == {False, True}


def _window(padded, dy, dx, flip):
    window = padded[:, dy:dy + 6, dx:dx + 7]
    return window.flip(-1) if flip else window


def test_random_erasing_blanks_one_rectangle():
    split = Split(torch.full((200, 1, 16, 16), 255, dtype=torch.uint8), torch.zeros(200).long())
    augment = AugmentConfig(erase_prob=0.5, erase_scale=(0.1, 0.2), erase_ratio=(0.5, 2.0))
    x, _ = batches(loader(split, augment=augment, batch_size=200, mean=(0.0,), std=(1.0,)))[0]
    erased = 0
    for image in x[:, 0]:
        zero = image == 0
        if zero.any():
            erased += 1
            rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
            box = zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all()  # the zeros form one rectangle
            assert 0.05 <= zero.float().mean() <= 0.3  # about 10-20% of the area, rounded
        else:
            assert torch.all(image == 1)
    assert 60 <= erased <= 140


def test_resize_matches_pillow_bilinear():
    split = random_split(4, shape=(1, 28, 28))
    for size in (96, 14):
        transform = BatchTransform((0.0,), (1.0,), resize=size)
        x = transform(split.images) * 255
        assert x.shape == (4, 1, size, size)
        for i in range(4):
            pil = Image.fromarray(split.images[i, 0].numpy()).resize((size, size),
                                                                     Image.Resampling.BILINEAR)
            assert np.abs(x[i, 0].numpy() - np.asarray(pil, dtype=np.float32)).max() <= 1.0


def test_resize_in_the_loader_with_augmentation():
    x, y = batches(loader(random_split(40, shape=(1, 28, 28)), augment=CROP_FLIP, resize=96))[0]
    assert x.shape == (16, 1, 96, 96) and y.shape == (16,)


def test_output_is_channels_last():
    split = random_split(20, shape=(3, 8, 8))
    x, _ = batches(loader(split, augment=CROP_FLIP, mean=(0.5,) * 3, std=(0.2,) * 3))[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x, _ = batches(loader(split, mean=(0.5,) * 3, std=(0.2,) * 3, channels_last=False))[0]
    assert x.is_contiguous()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crop_padding": -1}, r"crop_padding=-1 is out of range; allowed: an integer >= 0"),
        ({"crop_padding": 1.5}, r"crop_padding=1.5 is out of range"),
        ({"flip": "yes"}, r"flip='yes' is out of range; allowed: true or false"),
        ({"erase_prob": 1.5}, r"erase_prob=1.5 is out of range; allowed: 0 <= erase_prob <= 1"),
        ({"erase_scale": (0.5, 0.2)}, r"erase_scale=\(0.5, 0.2\) .* 0 < low <= high <= 1"),
        ({"erase_ratio": (0.0, 1.0)}, r"erase_ratio=\(0.0, 1.0\) .* 0 < low <= high"),
    ],
)
def test_augment_config_is_validated(options, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**options)


def test_loader_settings_are_validated():
    with pytest.raises(ConfigError, match="augment is only for training batches"):
        loader(train=False, augment=CROP_FLIP)
    with pytest.raises(ConfigError, match=r"crop_padding=9 is out of range for 8x8 images"):
        loader(augment=AugmentConfig(crop_padding=9))
    with pytest.raises(ConfigError, match="no batches: 100 images over 1 rank"):
        loader(batch_size=101)
    empty = Split(torch.empty((0, 1, 8, 8), dtype=torch.uint8), torch.empty(0).long())
    assert len(loader(empty, train=False)) == 0 and list(loader(empty, train=False)) == []
    with pytest.raises(ConfigError, match="no batches: 0 images"):
        loader(empty, train=True)
    with pytest.raises(ConfigError, match=r"rank must be in 0...1"):
        loader(rank=2, world_size=2)
    with pytest.raises(ConfigError, match="one value per channel"):
        loader(mean=(0.5, 0.5))
