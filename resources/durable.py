"""Writing files so that what was acknowledged survives a crash: shared by the collector, API polls, the
warehouse's snapshot and compaction, and the rewrites of an erasure."""

import os
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


def write_durably(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` so that a crash leaves the old content or the new, never part of either:
    written under a hidden name in the same folder, flushed, given `mode` and renamed over it, the folder
    flushed after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.new")
    try:
        staging.write_text(text, encoding="utf-8")
        os.chmod(staging, mode)
        fsync_path(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
