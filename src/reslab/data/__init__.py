"""Data sets and the batch pipeline.

    data = load_dataset("fashion-mnist")              # finds, verifies, holds out val
    loader = data.loader("train", 256, augment=AugmentConfig(crop_padding=2, flip=True))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:                 # float32 NCHW, channels_last
            ...

Images stay uint8 until a batch is taken; augmentation and normalisation run on whole batches.
"""

from reslab.data.augment import AugmentConfig, BatchTransform
from reslab.data.dataset import Dataset, dataset_names, load_dataset
from reslab.data.fetch import ProgressCallback
from reslab.data.folder import FileSplit
from reslab.data.loader import BatchLoader
from reslab.data.splits import ImageSplit, SourceInfo, Split, channel_stats

__all__ = [
    "AugmentConfig",
    "BatchLoader",
    "BatchTransform",
    "Dataset",
    "FileSplit",
    "ImageSplit",
    "ProgressCallback",
    "SourceInfo",
    "Split",
    "channel_stats",
    "dataset_names",
    "load_dataset",
]
