"""Drone survey uploads: a batch of files, each sent in chunks that can resume, checked as they arrive.

Protocol (in the spirit of tus.io, over plain HTTP):

1. ``POST /uploads`` with a manifest ``{"batch_id"?, "acquired_at"?, "files": [{"name", "size", "sha256"}]}``
   opens a batch (the same id and manifest again returns the same batch: idempotent). Names are plain file
   names (letters, digits, ``._-``; no paths), extensions ``.tif .tiff .jpg .jpeg``.
2. ``PATCH /uploads/{batch}/files/{name}`` with header ``Upload-Offset: N`` and the bytes from N on (any chunk
   size up to :data:`MAX_CHUNK_BYTES`), optionally ``Upload-Checksum: sha256 <hex>`` for the chunk. The
   server's offset is the length of what it holds; a chunk at another offset is refused with 409 and the
   current offset, so the client resumes from there. A chunk is appended as it streams in (one writer per
   file, by an exclusive ``flock``) and cut off again if it turns out bad (its hash, the declared size, a
   dropped connection): a refused chunk leaves nothing behind. When the last byte arrives the whole file is
   checked against its declared SHA-256 (hashed as it arrived); a mismatch discards it (422).
3. ``POST /uploads/{batch}/complete`` queues the batch's job once every file is complete.

Files are content-addressed: a completed file is hard-linked into ``blobs/<sha256>``, and a later manifest
naming content the server already has gets that file at once, so re-sending a survey transfers nothing.
Memory stays bounded whatever the file size: bodies are streamed in 1 MiB pieces.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from api.errors import ConflictingStateError, InvalidInputError, NotFoundError, PayloadTooLargeError
from api.service import Service

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg")
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_CHUNK_BYTES = 64 * 1024**2
_PIECE = 1024 * 1024
#: (data root, batch, file) -> (bytes hashed, running SHA-256): saves re-reading a file to check it.
_running: dict[tuple[str, str, str], tuple[int, object]] = {}


class Uploads:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store
        self.root = service.data_dir / "uploads"
        self.blobs = service.data_dir / "blobs"

    # ----------------------------------------------------------------------------------------- batches

    def open_batch(self, account: dict, manifest: dict) -> dict:
        self.service.require(account, "pipeline", "admin", doing="upload surveys")
        files = manifest.get("files") or []
        limit = self.service.settings.max_upload_files
        if not files:
            raise InvalidInputError("the manifest lists no files")
        if len(files) > limit:
            raise PayloadTooLargeError(f"{len(files)} files in one batch; at most {limit}")
        seen = set()
        clean = []
        for entry in files:
            name, size, sha = entry["name"], entry["size"], entry["sha256"].lower()
            check_name(name)
            if name in seen:
                raise InvalidInputError(f"file {name} is listed twice")
            seen.add(name)
            if size <= 0:
                raise InvalidInputError(f"file {name}: size must be positive")
            if size > self.service.settings.max_upload_file_bytes:
                raise PayloadTooLargeError(f"file {name} of {size:,} bytes exceeds the limit of "
                                           f"{self.service.settings.max_upload_file_bytes:,}")
            if not SHA256.match(sha):
                raise InvalidInputError(f"file {name}: sha256 must be 64 hex digits")
            clean.append({"name": name, "size": int(size), "sha256": sha})
        batch_id = manifest.get("batch_id") or uuid.uuid4().hex
        if not BATCH_ID.match(batch_id):
            raise InvalidInputError("batch_id: 8 to 64 letters, digits, '-' or '_'")
        acquired = manifest.get("acquired_at")
        manifest = {"files": clean, "acquired_at": acquired.isoformat() if isinstance(acquired, datetime) else None}
        batch, created = self.store.create_batch(batch_id, account["username"], manifest, self.service.clock())
        if not created and (batch["username"] != account["username"] or batch["manifest"]["files"] != clean):
            raise ConflictingStateError(f"batch {batch_id} exists with another manifest or owner; use a new batch_id")
        directory = self.root / batch_id
        directory.mkdir(parents=True, exist_ok=True)
        for entry in clean:
            final = directory / entry["name"]
            blob = self.blobs / entry["sha256"]
            if not final.exists() and blob.exists():
                os.link(blob, final)
        return self.status(account, batch_id)

    def _batch(self, account: dict, batch_id: str) -> dict:
        if not BATCH_ID.match(batch_id or ""):
            raise NotFoundError(f"no upload batch {batch_id!r}")
        batch = self.store.get_batch(batch_id)
        if batch is None or (account["role"] != "admin" and batch["username"] != account["username"]):
            raise NotFoundError(f"no upload batch {batch_id!r} of yours")
        return batch

    def status(self, account: dict, batch_id: str) -> dict:
        self.service.require(account, "pipeline", "admin", doing="read uploads")
        batch = self._batch(account, batch_id)
        manifest = batch["manifest"]
        files = []
        for entry in manifest["files"]:
            received = self._received(batch_id, entry["name"], entry["size"])
            files.append({**entry, "received": received, "complete": received == entry["size"]})
        job = next((j for j in self.store.list_jobs() if j["batch_id"] == batch_id), None)
        return {"batch_id": batch_id, "state": batch["state"], "acquired_at": manifest.get("acquired_at"),
                "files": files, "job_id": job["id"] if job else None}

    def _received(self, batch_id: str, name: str, size: int) -> int:
        directory = self.root / batch_id
        if (directory / name).exists():
            return size
        part = directory / f"{name}.part"
        return part.stat().st_size if part.exists() else 0

    # ------------------------------------------------------------------------------------------ chunks

    async def put_chunk(self, account: dict, batch_id: str, name: str, offset: int, body: AsyncIterator[bytes],
                        checksum: str | None) -> dict:
        self.service.require(account, "pipeline", "admin", doing="upload surveys")
        batch = self._batch(account, batch_id)
        entry = next((f for f in batch["manifest"]["files"] if f["name"] == name), None)
        if entry is None:
            raise NotFoundError(f"file {name!r} is not in batch {batch_id}'s manifest")
        expected_chunk = _parse_checksum(checksum)
        directory = self.root / batch_id
        final, part = directory / name, directory / f"{name}.part"
        if final.exists():
            return self._file_status(entry, entry["size"])
        with open(part, "ab") as out:
            try:  # one writer per file, across server processes too
                fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConflictingStateError(f"another chunk of {name} is being received; retry shortly") from None
            current = os.fstat(out.fileno()).st_size
            if offset != current:
                raise ConflictingStateError(f"{name}: Upload-Offset {offset} but the server holds {current} bytes; "
                                            f"resume from {current}")
            whole = self._running_hash(batch_id, name, current)
            chunk, length = hashlib.sha256(), 0
            try:
                async for piece in body:
                    length += len(piece)
                    if offset + length > entry["size"]:
                        raise PayloadTooLargeError(f"chunk runs past the end of {name} ({entry['size']:,} bytes)")
                    if length > MAX_CHUNK_BYTES:
                        raise PayloadTooLargeError(f"chunk over {MAX_CHUNK_BYTES:,} bytes; send smaller chunks")
                    chunk.update(piece)
                    if whole is not None:
                        whole.update(piece)
                    out.write(piece)
                if expected_chunk is not None and chunk.hexdigest() != expected_chunk:
                    raise InvalidInputError(f"chunk of {name} at offset {offset} does not match its Upload-Checksum; "
                                            "nothing was kept, send it again")
            except BaseException:
                # A refused or broken chunk leaves the file as it was: the client resumes from ``current``.
                out.flush()
                out.truncate(current)
                _running.pop((str(self.root), batch_id, name), None)
                raise
            out.flush()
            received = current + length
            if whole is not None:
                _running[(str(self.root), batch_id, name)] = (received, whole)
            if received == entry["size"]:
                os.fsync(out.fileno())
                self._finish_file(part, final, entry, _running.pop((str(self.root), batch_id, name), (0, None))[1])
            return self._file_status(entry, received)

    def _running_hash(self, batch_id: str, name: str, offset: int):
        """The file's SHA-256 so far, kept between chunks in this process (None: re-read at the end)."""
        if offset == 0:
            return hashlib.sha256()
        known = _running.get((str(self.root), batch_id, name))
        return known[1] if known and known[0] == offset else None

    def _finish_file(self, part: Path, final: Path, entry: dict, digest) -> None:
        if digest is None:
            digest = hashlib.sha256()
            with open(part, "rb") as data:
                while piece := data.read(_PIECE):
                    digest.update(piece)
        if digest.hexdigest() != entry["sha256"]:
            part.unlink()
            raise InvalidInputError(f"{entry['name']} does not match its declared SHA-256 once complete; it was "
                                    "discarded, upload it again")
        os.replace(part, final)
        blob = self.blobs / entry["sha256"]
        if not blob.exists():
            try:
                os.link(final, blob)
            except FileExistsError:
                pass

    @staticmethod
    def _file_status(entry: dict, received: int) -> dict:
        return {"name": entry["name"], "size": entry["size"], "received": received,
                "complete": received == entry["size"]}

    def complete(self, account: dict, batch_id: str) -> dict:
        status = self.status(account, batch_id)
        missing = [f["name"] for f in status["files"] if not f["complete"]]
        if missing:
            raise ConflictingStateError(f"batch {batch_id} is incomplete: {len(missing)} file(s) not fully "
                                        f"received ({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''})")
        return self.store.complete_batch(batch_id, self.service.clock())


def check_name(name: str) -> None:
    if not isinstance(name, str) or not FILE_NAME.match(name) or ".." in name:
        raise InvalidInputError(f"file name {name!r} refused: plain names only (letters, digits, '.', '_', '-'; "
                                "no directories)")
    if not name.lower().endswith(EXTENSIONS):
        raise InvalidInputError(f"file {name}: only {', '.join(EXTENSIONS)} files belong in a survey")


def _parse_checksum(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    algorithm, _, digest = value.strip().partition(" ")
    digest = digest.strip().lower()
    if algorithm.lower() != "sha256" or not SHA256.match(digest):
        raise InvalidInputError("Upload-Checksum must be 'sha256 <64 hex digits>'")
    return digest
