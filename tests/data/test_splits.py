"""The validation split and the normalisation statistics."""

import pytest
import torch

from reslab.data import Split, channel_stats, load_dataset
from reslab.data.splits import hold_out
from reslab.errors import ConfigError


def numbered_split(n: int) -> Split:
    """Image i is filled with the value i % 256, so images can be told apart by content."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4)
    return Split(images.contiguous(), torch.arange(n) % 10)


def test_hold_out_sizes_disjoint_and_complete():
    split = numbered_split(200)
    train, val = hold_out(split, 30, seed=1)
    assert len(train) == 170 and len(val) == 30
    ids_train = set(train.images[:, 0, 0, 0].tolist())
    ids_val = set(val.images[:, 0, 0, 0].tolist())
    assert ids_train.isdisjoint(ids_val) and ids_train | ids_val == set(range(200))
    assert torch.equal(val.labels, val.images[:, 0, 0, 0].long() % 10)  # labels travel along


def test_hold_out_is_fixed_by_the_seed():
    split = numbered_split(200)
    first = hold_out(split, 30, seed=1)[1].images[:, 0, 0, 0]
    again = hold_out(split, 30, seed=1)[1].images[:, 0, 0, 0]
    other = hold_out(split, 30, seed=2)[1].images[:, 0, 0, 0]
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("size", [-1, 200, 5000])
def test_hold_out_size_out_of_range(size):
    with pytest.raises(ConfigError, match="val_size must be between 0 and 199"):
        hold_out(numbered_split(200), size, seed=0)


def test_val_size_zero_and_default(tmp_path, make_fashion):
    make_fashion(tmp_path / "fm", n_train=60)
    assert len(load_dataset("fashion-mnist", tmp_path / "fm", val_size=0).val) == 0
    with pytest.raises(ConfigError, match="val_size must be between 0 and 59.*got 5000"):
        load_dataset("fashion-mnist", tmp_path / "fm")  # the default, 5,000, is too many here
    with pytest.raises(ConfigError, match="val_size must be an integer >= 0"):
        load_dataset("fashion-mnist", tmp_path / "fm", val_size=-3)


def test_stats_are_those_of_the_training_part(tmp_path, make_fashion):
    make_fashion(tmp_path / "fm", n_train=60)
    data = load_dataset("fashion-mnist", tmp_path / "fm", val_size=20, seed=3)
    pixels = data.train.images.double() / 255
    assert data.mean == pytest.approx((pixels.mean().item(),), abs=1e-12)
    assert data.std == pytest.approx((pixels.std(unbiased=False).item(),), abs=1e-12)
    everything = load_dataset("fashion-mnist", tmp_path / "fm", val_size=0)
    assert everything.mean != data.mean  # the held-out images are not counted


def test_channel_stats_per_channel():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8, generator=generator)
    images[:, 2] = 17  # a constant channel
    mean, std = channel_stats(images)
    pixels = images.double() / 255
    assert mean == pytest.approx(tuple(pixels.mean(dim=(0, 2, 3)).tolist()), abs=1e-12)
    assert std[:2] == pytest.approx(tuple(pixels.std(dim=(0, 2, 3), unbiased=False)[:2].tolist()),
                                    abs=1e-12)
    assert std[2] == pytest.approx(1 / 255)  # floored so that normalising cannot divide by 0


def test_fingerprint_of_an_empty_split():
    """An empty split (val_size 0, the d2l preset; a folder without test/) has a fingerprint,
    and it differs from a non-empty one's (it used to raise in memoryview)."""
    from reslab.data.splits import fingerprint

    split = numbered_split(20)
    empty = split.subset(torch.arange(0))
    assert fingerprint(empty) == fingerprint(numbered_split(0))
    assert fingerprint(empty) != fingerprint(split)
    assert fingerprint(split) == fingerprint(numbered_split(20))
