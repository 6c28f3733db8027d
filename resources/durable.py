"""Writing files so that what was acknowledged survives a crash: shared by the collector and API polls."""

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk: a file created or renamed in it survives a power cut only then."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
