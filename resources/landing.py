"""The landing folder as both the landing sensor and the extract stage see it.

The sensor decides from these file lists alone (it never opens the warehouse) and the extract loads the
same files, so both read them here.
"""

from pathlib import Path

import dagster as dg

from resources.config import CDPConfig, SourceConfig


class ExtractConfig(dg.Config):
    """Run configuration; the landing sensor asks for no materialization when nothing changed."""

    skip_if_unchanged: bool = False


def source_files(config: CDPConfig, source: SourceConfig) -> list[Path]:
    """Files of a source in the landing folder, in a stable order."""
    landing = config.landing_path
    return sorted(p for p in landing.glob(source.glob) if p.is_file() and not p.name.startswith("."))
