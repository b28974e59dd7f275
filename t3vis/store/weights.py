"""Where a checkpoint's weights are: the one check that they exist, for the server, the pipelines and training.

A checkpoint's weights (safetensors, config, tokenizer) live in a directory of the run (``weights/<name>``) or
wherever its ``weights`` attr points; workers on other machines read them through a local copy.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from ..errors import ModelError
from .location import Location


def weights_directory(directory) -> str:
    """Where the checkpoint saved at ``directory`` is: there, or, if a `save_model` replacing it was interrupted
    between its two renames, the complete previous copy it had set aside at ``directory.old``."""
    directory = os.fspath(Path(directory).expanduser())
    old = directory + ".old"
    return old if not os.path.exists(directory) and os.path.isdir(old) else directory


def checked_weights(weights, what: str) -> str:
    """The weights directory ``weights`` (a path or fsspec URL) of ``what`` (e.g. "checkpoint 'x' of run 'y'"),
    checked to exist; a ModelError naming the path otherwise, or saying none was recorded."""
    if not weights:
        raise ModelError(f"{what} has no model weights recorded (a synthetic run, or a run written without "
                         "weights), so predictions, attention and saliency cannot be computed for it")
    loc = Location.of(str(weights))
    found = Location.of(weights_directory(loc.root) if loc.is_local else loc.url)
    if not found.fs.isdir(found.root):
        raise ModelError(f"the model weights of {what} are missing: expected a directory with model.safetensors "
                         f"and config.json at {found.url}, which does not exist (moved or deleted?)")
    return found.url


@functools.lru_cache(maxsize=8)
def local_weights(url: str) -> str:
    """A local directory with the weights: the path itself, or a per-process copy of a remote (fsspec) one."""
    loc = Location.of(url)
    if loc.is_local:
        return loc.root
    target = os.path.join(tempfile.gettempdir(), "t3vis-weights", hashlib.sha1(url.encode()).hexdigest()[:16])
    if not os.path.isdir(target):
        tmp = target + f".{os.getpid()}"
        loc.fs.get(loc.root.rstrip("/") + "/", tmp, recursive=True)
        os.replace(tmp, target)
    return target
