"""Writing files so that what was acknowledged survives a crash: shared by the collector, API polls, the
warehouse's snapshot and compaction, and the rewrites of an erasure."""

import os
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk: a file written under a temporary name is
    safe to rename only once flushed, and a file created or renamed in a folder survives a power cut only
    once the folder is flushed too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[Path], object], mode: int | None = None) -> None:
    """Replace `path` so that a crash leaves its old content or the new, never part of either: `write` fills
    a hidden file in the same folder, which is flushed, given `mode` (else the original's permissions) and
    renamed over it, the folder flushed after."""
    staging = path.with_name(f".{path.name}.rewrite")
    staging.unlink(missing_ok=True)
    try:
        write(staging)
        fsync_path(staging)
        os.chmod(staging, mode if mode is not None else path.stat().st_mode & 0o777)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
