"""Checkpoint helpers for training code: ``from aiinfra import checkpoint as ckpt``.

The implementation lives in :mod:`aiinfra.launcher.checkpoint`; this module is the name
users import. Importing it imports no torch.
"""

from .launcher.checkpoint import (DEFAULT_KEEP, ENV_DIR, ENV_KEEP, ENV_STOP,
                                 CheckpointError, Marker, checkpoint_dir,
                                 complete_steps, install_signal_handlers, keep_count,
                                 latest_marker, latest_step, load_latest, markers,
                                 prune, save, stop_requested, stop_signal)

__all__ = ["DEFAULT_KEEP", "ENV_DIR", "ENV_KEEP", "ENV_STOP", "CheckpointError", "Marker",
           "checkpoint_dir", "complete_steps", "install_signal_handlers", "keep_count",
           "latest_marker", "latest_step", "load_latest", "markers", "prune", "save",
           "stop_requested", "stop_signal"]
