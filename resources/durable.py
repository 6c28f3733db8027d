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
