"""Packages that load their modules on first use, so importing one costs nothing until a name is asked for
(``t3vis --help`` registers every subcommand without importing zarr, Dask or torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``package.<exports[name]>`` the first time ``name`` is
    asked for: ``__getattr__ = lazy_attributes(__name__, {"Run": "reader"})``."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
