"""Damage is an error, never data.

Zarr fills a chunk it cannot find with the fill value, so a deleted chunk would read back as zeros. Every array
this project writes stores all of its chunks and ends each with a CRC-32C (``writer.create_array``), so for such a
*checked* array a missing chunk is always damage. ``CheckedStore`` wraps the zarr store a run is read through and
turns a missing chunk of a checked array into a ``StoreError`` naming the array and chunk. That costs nothing on
the normal path: only a miss looks at the array's metadata. Checksums are verified by zarr's codec on every read;
``verify=True`` checks them in the store too, before decoding, so that the error can name the chunk (the reader
retries a failed read that way, and ``validate`` checks every chunk that way).

Arrays without the codec (schema version 1) are read as zarr reads them: a missing chunk is the fill value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from ..errors import StoreError

#: A chunk key with zarr's default v3 encoding: ``<array path>/c/<i>/<j>...`` (``<array path>/c`` when 0-d).
#: Greedy, so an array or group named ``c`` still parses: coordinates are digits.
_CHUNK_KEY = re.compile(r"^(?P<array>.+)/(?P<chunk>c(?:/\d+)*)$")
METADATA = "zarr.json"
MISSING = ("is missing (every chunk of this array was written, so the run is damaged; `t3vis validate RUN` lists "
           "all damage)")


class ChunkError(StoreError):
    """A chunk of a checked array is missing or corrupt; says which, and why."""

    def __init__(self, where: str, array: str, chunk: str, reason: str):
        super().__init__(f"{where}/{array}: chunk {chunk} {reason}")
        self.array, self.chunk, self.reason = array, chunk, reason


def split_chunk_key(key: str) -> tuple[str, str] | None:
    """``(array path, chunk key below it)`` for a chunk key, None for metadata or anything else."""
    if key == METADATA or key.endswith("/" + METADATA):
        return None
    m = _CHUNK_KEY.match(key)
    return (m["array"], m["chunk"]) if m else None


def is_checked(metadata: dict[str, Any]) -> bool:
    """Whether an array's ``zarr.json`` (as a dict) promises checksummed chunks, all of them stored."""
    codecs = metadata.get("codecs") or []
    return bool(codecs) and _codec_name(codecs[-1]) == "crc32c"


def _codec_name(codec: Any) -> str | None:
    return codec if isinstance(codec, str) else codec.get("name") if isinstance(codec, dict) else None


def checksum_problem(data) -> str | None:
    """Why a checksummed chunk's bytes are damaged (payload + little-endian CRC-32C), or None when they are intact."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size < 4:
        return f"truncated to {raw.size} byte(s), shorter than its checksum"
    stored, computed = int.from_bytes(raw[-4:].tobytes(), "little"), google_crc32c.value(raw[:-4])
    if stored != computed:
        return (f"checksum mismatch (stored {stored:08x}, computed {computed:08x}): the chunk was truncated or "
                "altered after it was written")
    return None


class CheckedStore(WrapperStore):
    """A read view of a run's store on which a missing chunk of a checked array raises (``verify``: a bad one too).

    ``where`` is how messages name the store (its URL).
    """

    def __init__(self, store: Store, where: str = "", verify: bool = False) -> None:
        super().__init__(store)
        self.where = where.rstrip("/")
        self.verify = verify
        self._checked: dict[str, bool] = {}

    def _with_store(self, store: Store) -> "CheckedStore":
        return type(self)(store, self.where, self.verify)

    def verifying(self) -> "CheckedStore":
        """The same store, checking every checksum before zarr decodes (to name a chunk that fails)."""
        return type(self)(self._store, self.where, verify=True)

    def __repr__(self) -> str:
        return f"CheckedStore({self._store!r}, verify={self.verify})"

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
                  ) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None and not self.verify:
            return buf
        parts = split_chunk_key(key)
        if parts is None or not await self._is_checked(parts[0]):
            return buf
        array, chunk = parts
        if buf is None:
            raise ChunkError(self.where, array, chunk, MISSING)
        if byte_range is None:
            problem = checksum_problem(buf.as_numpy_array())
            if problem:
                raise ChunkError(self.where, array, chunk, f"is corrupt: {problem}")
        return buf

    async def _is_checked(self, array: str) -> bool:
        if array not in self._checked:
            raw = await self._store.get(f"{array}/{METADATA}", default_buffer_prototype())
            try:
                meta = json.loads(raw.to_bytes()) if raw is not None else {}
            except ValueError:
                meta = {}
            self._checked[array] = meta.get("node_type") == "array" and is_checked(meta)
        return self._checked[array]
