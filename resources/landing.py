"""The landing folder as both the landing sensor and the extract stage see it.

The sensor decides from these file lists alone (it never opens the warehouse) and the extract loads the
same files, so both read them here.
"""

import os
from pathlib import Path

import dagster as dg

from resources.config import CDPConfig, SourceConfig

# The extract's metadata entry saying when a file of the source last loaded, whether or not that run loaded
# one: the freshness sensor judges a source by it, not by when its extract last ran.
LAST_FILE_LOADED_AT = "last_file_loaded_at"
# The extract's metadata entry giving the signature of every file it found loaded or unchanged: a landing
# sensor with no cursor of its own yet (its first tick under `dagster dev`, after a headless refresh loaded
# the files) starts from it, rather than launching an extract for every file already in the warehouse.
FILE_SIGNATURES = "file_signatures"
# The extract's warning check that every file of the source could be read: the landing sensor runs it with
# the extract, and the alert sensor posts the files it names.
FILES_READABLE_CHECK = "files_readable"
# Beyond this many files the signatures are not recorded (the metadata would outgrow its use); the sensor
# then treats every file as new on its first tick, and the extract skips each by its content hash.
MAX_RECORDED_SIGNATURES = 5000


def file_signature(stat: os.stat_result) -> str:
    """What tells a landing file changed without reading it: its size and modification time."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class ExtractConfig(dg.Config):
    """Run configuration; the landing sensor asks for no materialization when nothing changed."""

    skip_if_unchanged: bool = False


def source_files(config: CDPConfig, source: SourceConfig) -> list[Path]:
    """Files of a source in the landing folder, in a stable order. The glob matches names whatever their
    letters' case, as the Windows systems many exports come from write them: a till's `SALES.CSV` is one
    of `pos/*.csv`, not a file silently left unread."""
    return matching_files(config, source)[0]


def matching_files(config: CDPConfig, source: SourceConfig) -> tuple[list[Path], list[Path]]:
    """(the source's files, the files its glob matches whose names begin with a dot), each in a stable
    order, from one look at the folder.

    A name beginning with a dot is never read: it is an upload still under way (rsync's `.contacts.csv.Ab12`),
    a system file (macOS's `._contacts.csv`) or the platform's own temporary file, so loading it would load
    half a file or garbage; but a user who exported `.customers.csv` must hear why it did not load, so the
    extract names them."""
    matched = sorted(p for p in config.landing_path.glob(caseless_glob(source.glob)) if p.is_file())
    return [p for p in matched if not p.name.startswith(".")], [p for p in matched if p.name.startswith(".")]


def caseless_glob(pattern: str) -> str:
    """`pattern` matching either case of each letter (`*.csv` as `*.[cC][sS][vV]`), for `Path.glob`, which
    on POSIX tells cases apart. A letter inside a `[...]` class is left as written, and so is one whose other
    case is not one letter (`ß`)."""
    out, in_class = [], False
    for char in pattern:
        if in_class:
            in_class = char != "]"
            out.append(char)
        elif char == "[":
            in_class = True
            out.append(char)
        elif char.isalpha() and len(char.lower()) == 1 and len(char.upper()) == 1 and char.lower() != char.upper():
            out.append(f"[{char.lower()}{char.upper()}]")
        else:
            out.append(char)
    return "".join(out)


def outside_landing(landing: Path, path: Path) -> bool:
    """Whether `path` is a link to a file outside the landing folder (its own links followed too).

    Whoever may drop files into the landing folder may also drop a symbolic link there (SFTP creates them);
    read through it, `/etc/passwd` or a secrets file would load into the warehouse and its first line show
    in the quarantine of the read snapshot. The extract refuses such a file, as the configuration refuses a
    glob reaching outside the folder. A file that is no link itself is the folder's own, whatever folder
    links led to it: an operator may link a source's folder to a mount elsewhere.
    """
    resolved = path.resolve()
    return not resolved.is_relative_to(landing.resolve()) and resolved != path.parent.resolve() / path.name


def poll_key(source: SourceConfig) -> dg.AssetKey:
    """The asset an http source's poll materializes: its pages in the landing folder, upstream of its extract."""
    return dg.AssetKey(["landing", source.name])


def api_sources(config: CDPConfig) -> list[SourceConfig]:
    """The sources the platform polls over HTTP instead of waiting for their files."""
    return [s for s in config.sources if s.format == "http"]
