"""aiinfra: launch AI training and inference on Slurm."""

__version__ = "0.1.0"
