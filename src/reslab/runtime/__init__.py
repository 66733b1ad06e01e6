"""What using a model needs, below training: the device, precision and threads
(``device.py``), evaluation and prediction (``evaluate.py``), the checkpoint's metadata record
(``checkpoint_meta.py``), reading and writing checkpoints and the one way from a checkpoint
to a network (``checkpoint.py``), timm / Hugging Face model folders
read as checkpoints (``model_folder.py``). Training imports these; they import no training."""
