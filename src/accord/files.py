"""Atomic file writes: a temp file in the same folder, renamed into place only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path (created 0600) to write; on success it gets ``mode`` and replaces ``path``.

    Readers see the old file or the whole new one, never a partial write; on error the temp
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically, flushed to disk, with ``mode``."""
    with atomic_path(path, mode) as partial:
        with partial.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def link_or_copy(source: Path, target: Path) -> Path:
    """Make ``target`` a hard link to ``source``, atomically (a temporary link renamed over
    it); a copy, flushed to disk, where the file system refuses links (another device, no
    link support). A link shares the file: replace ``target`` (as every writer here does),
    never write into it."""
    if Path(target).exists() and os.path.samefile(source, target):
        return Path(target)  # already that file (a rename of a link over it would do nothing, leaving the temporary link)
    with atomic_path(Path(target)) as partial:
        partial.unlink()
        try:
            os.link(source, partial)
        except OSError:
            with Path(source).open("rb") as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
    return Path(target)
