"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh path beside ``path`` to write to, renamed onto ``path`` when the block succeeds.

    The temporary name keeps the suffix, because GDAL picks its driver by it, and does not exist when the
    block starts, because GDAL will not overwrite an empty file it cannot open: it is made unique by 64
    random bits rather than by creating it (``mkstemp``), which cost a second file creation and a removal
    per write, the slowest file-system operations a pipeline run makes. On failure it is removed and
    ``path`` is left as it was.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text()
    'whole'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
