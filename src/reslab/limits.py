"""Bounds on sizes that come from files or options, far beyond any real use and far below what
would exhaust this machine: a value past one is refused before anything is allocated."""

MAX_IMAGE_SIDE = 2048  # pixels: an image, a resize, a checkpoint's input size
MAX_CHANNELS = 16  # input channels a checkpoint may ask for (grey 1, RGB 3)
MAX_CLASSES = 100_000  # classes a checkpoint may name (ImageNet-21k has 21,843)
MAX_UNITS = 2_000  # residual units in a network (ResNet-1202 has 600)
MAX_PREDICT_IMAGES = 100_000  # images one `reslab predict` lists from the folders it is given
