"""Where a run lives: a local path or any fsspec URL, with the few file operations the store needs."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import zarr


@dataclass(frozen=True)
class Location:
    """A run directory on some filesystem. ``url`` is what the user gave; ``fs``/``root`` are resolved."""

    url: str
    fs: Any
    root: str

    @classmethod
    def of(cls, url: "str | Location", **storage_options) -> "Location":
        if isinstance(url, Location):
            return url
        url = str(url)
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
        return cls(url=url, fs=fs, root=root.rstrip("/") or "/")

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *[p.strip("/") for p in parts if p])

    def url_of(self, *parts: str) -> str:
        """A URL zarr/fsspec can open for a path below the run."""
        p = self.path(*parts)
        if self.is_local:
            return p
        proto = _protocols(self.fs)[0]
        return f"{proto}://{p.lstrip('/')}" if proto != "memory" else f"memory://{p}"

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def touch(self, *parts: str) -> None:
        p = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(p), exist_ok=True)
        self.fs.pipe_file(p, b"")

    def rm(self, *parts: str) -> None:
        p = self.path(*parts)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=True)

    def mv(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (both relative). Atomic on a local filesystem."""
        s, d = self.path(src), self.path(dst)
        self.fs.makedirs(posixpath.dirname(d), exist_ok=True)
        if self.is_local:
            import os

            os.replace(s, d)
        else:
            self.fs.mv(s, d, recursive=True)

    def ls(self, *parts: str) -> list[str]:
        p = self.path(*parts)
        if not self.fs.exists(p):
            return []
        return sorted(posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    def write_json_atomic(self, rel: str, obj: Any) -> None:
        tmp = rel + ".tmp"
        self.fs.makedirs(posixpath.dirname(self.path(rel)), exist_ok=True)
        self.fs.pipe_file(self.path(tmp), json.dumps(obj, indent=2, default=str).encode())
        self.mv(tmp, rel)

    def open_group(self, rel: str, mode: str = "r") -> zarr.Group:
        return zarr.open_group(self.url_of(rel), mode=mode, zarr_format=3)

    def zarr_store(self, rel: str, read_only: bool = True) -> zarr.abc.store.Store:
        """The zarr store rooted at ``rel`` (to wrap, e.g. with ``integrity.CheckedStore``)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.path(rel), read_only=read_only)
        return FsspecStore.from_url(self.url_of(rel), read_only=read_only)


def _protocols(fs) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
