"""Command-line value checks: argparse ``type=`` callables for every subcommand (t3vis, pipelines).

Each one checks a value before any work starts, so a bad count, fraction, path or address is one line naming the
argument and what was expected (argparse's usage error, exit 2) rather than a traceback minutes later. Remote run
URLs (``s3://...``) pass the path checks untouched: only the store itself can tell whether they exist.
Imports nothing heavy: every ``t3vis`` call builds the parser.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

Invalid = argparse.ArgumentTypeError


@dataclass(frozen=True)
class IntRange:
    """An integer ``>= low`` (and ``<= high`` when given)."""

    low: int
    high: int | None = None

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Invalid(f"expected {self.describe()}, got {text!r}") from None
        if value < self.low or (self.high is not None and value > self.high):
            raise Invalid(f"expected {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        return f"an integer in {self.low}..{self.high}" if self.high is not None else f"an integer >= {self.low}"


@dataclass(frozen=True)
class FloatRange:
    """A finite number between ``low`` and ``high`` (None: unbounded), each end open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"expected {self.describe()}, got {text!r}") from None
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not math.isfinite(value) or too_low or too_high:
            raise Invalid(f"expected {self.describe()}, got {text}")
        return value

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        return f"a number {'>' if self.low_open else '>='} {self.low:g}"


positive_int = IntRange(1)
non_negative_int = IntRange(0)
#: Tokens per input: a special token at each end leaves room for text only from 2 up.
token_count = IntRange(2)
port = IntRange(0, 65535)
positive_float = FloatRange(0.0, low_open=True)
#: A share of rows, 0 and 1 included (label noise).
fraction = FloatRange(0.0, 1.0)
#: A share that must leave rows on both sides (a validation split).
open_fraction = FloatRange(0.0, 1.0, low_open=True, high_open=True)


def _remote(text: str) -> bool:
    scheme = urlsplit(text).scheme
    return len(scheme) > 1 and scheme != "file"  # "C:\\..." is a drive letter, not a scheme


def _local(text: str) -> Path:
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def existing_path(text: str) -> str:
    """An input file or directory that exists (or a remote URL)."""
    if not text:
        raise Invalid("expected a path, got an empty string")
    if not _remote(text) and not _local(text).exists():
        raise Invalid(f"{text} does not exist")
    return text


def existing_file(text: str) -> str:
    """An input file that exists."""
    path = _local(existing_path(text))
    if not _remote(text) and not path.is_file():
        raise Invalid(f"{text} is not a file")
    return text


def existing_dir(text: str) -> str:
    """An input directory that exists (a model directory, say)."""
    path = _local(existing_path(text))
    if not _remote(text) and not path.is_dir():
        raise Invalid(f"{text} is not a directory")
    return text


def output_dir(text: str) -> str:
    """A directory to write (or create): not a file, and its nearest existing ancestor is writable."""
    if not text:
        raise Invalid("expected a directory path, got an empty string")
    if _remote(text):
        return text
    path = _local(text).absolute()
    if path.exists() and not path.is_dir():
        raise Invalid(f"{text} is a file; expected a directory to write")
    return _creatable(text, path)


def runs_dir(text: str) -> str:
    """A runs directory: an existing one (read-only is fine: serving shared runs), or one that can be created."""
    path = _local(text).absolute()
    if path.is_dir() or _remote(text):
        return text
    if path.exists():
        raise Invalid(f"{text} is a file; expected a directory of runs")
    return _creatable(text, path)


def _creatable(text: str, path: Path) -> str:
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Invalid(f"cannot create {text}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only_fs(parent) else "not writable by this user"
        raise Invalid(f"cannot write {text}: {parent} is {why}")
    return text


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def torch_device(text: str) -> str:
    """A torch device name (``cpu``, ``cuda``, ``cuda:1``, ...); whether it is present is checked where it runs."""
    import torch  # only when --device is given

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise Invalid(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


#: Dask's communication protocols (``distributed.comm``): what a scheduler address may start with.
SCHEDULER_PROTOCOLS = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


def scheduler_address(text: str) -> str:
    """A Dask scheduler address, ``tcp://HOST:PORT`` (a bare ``HOST:PORT`` means tcp)."""
    url = text if "://" in text else f"tcp://{text}"
    expected = f"expected a Dask scheduler address tcp://HOST:PORT, got {text!r}"
    parts = urlsplit(url)
    try:
        port_number = parts.port
    except ValueError:  # not a number, or out of range
        raise Invalid(expected) from None
    if parts.scheme not in SCHEDULER_PROTOCOLS or not parts.hostname or parts.path not in ("", "/") or (
            parts.scheme != "inproc" and not port_number):
        raise Invalid(expected)
    return url
