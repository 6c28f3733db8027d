"""A real, throw-away PostgreSQL server for the tests of the PostgreSQL destination.

A mocked database would accept SQL the real one refuses, so these tests talk to a real server: the one named
by $CDP_TEST_POSTGRES_DSN, or else a private cluster built in a temporary directory from the server binaries
of Debian's `postgresql` package (`.ci/run` installs them on CI machines). The private cluster needs neither
the system service nor a fixed port, so it cannot collide with a PostgreSQL already running on the machine.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ENV_DSN = "CDP_TEST_POSTGRES_DSN"
BINARIES = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root, so under root the cluster belongs to this system user.
SERVER_USER = "cdp_pg"
INSTALL_HINT = (
    "PostgreSQL server binaries (pg_ctl, initdb) not found under /usr/lib/postgresql/*/bin: "
    "install them with `apt-get install postgresql`, or point $CDP_TEST_POSTGRES_DSN at a server"
)


def server_binaries() -> Path | None:
    """The newest installed version's bin directory, if any (Debian installs versions side by side)."""
    found = [path.parent for path in BINARIES.glob("*/bin/pg_ctl") if (path.parent / "initdb").exists()]
    return max(found, key=lambda bindir: [int(n) for n in re.findall(r"\d+", bindir.parent.name)], default=None)


@contextmanager
def postgres_dsn() -> Iterator[str]:
    """The DSN of a server the tests may create and drop tables in, for a session-scoped fixture.

    Without binaries the PostgreSQL tests are skipped on a developer's machine, but fail on CI, where a
    skip would silently hide a broken installation step.
    """
    configured = os.environ.get(ENV_DSN)
    if configured:
        yield configured
        return
    bindir = server_binaries()
    if bindir is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{INSTALL_HINT} (on CI, .ci/run should have installed them)", pytrace=False)
        pytest.skip(INSTALL_HINT)
    with _cluster(bindir) as dsn:
        yield dsn


@contextmanager
def _cluster(bindir: Path) -> Iterator[str]:
    user = _server_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="cdp-pg-"))
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        data = root / "data"
        _run(
            user,
            root,
            [bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        )
        with (data / "postgresql.conf").open("a") as conf:
            # Durability buys nothing in a cluster deleted after the run; dropping it makes commits instant.
            conf.write(
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        port = _start(user, root, bindir, data)
        try:
            yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"
        finally:
            _run(user, root, [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(user: str | None, root: Path, bindir: Path, data: Path) -> int:
    """Start on a free port, trying another if someone took the chosen one before the server bound it."""
    log = root / "server.log"
    for _ in range(3):
        port = _free_port()
        started = _run(
            user,
            root,
            [bindir / "pg_ctl", "-D", data, "-l", log, "-o", f"-p {port}", "-w", "-t", "60", "start"],
            check=False,
        )
        if started.returncode == 0:
            return port
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
    pytest.fail(f"the test PostgreSQL server did not start:\n{tail}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> str:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        # A parallel test run may create it at the same moment; the lookup below is what counts.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            capture_output=True,
            check=False,
        )
        pwd.getpwnam(SERVER_USER)
    return SERVER_USER


def _run(user: str | None, cwd: Path, command: list[str | Path], *, check: bool = True) -> subprocess.CompletedProcess:
    args = [str(part) for part in command]
    if user is not None:
        if shutil.which("runuser"):
            args = ["runuser", "-u", user, "--", *args]
        else:
            args = ["su", "-s", "/bin/sh", user, "-c", shlex.join(args)]
    # The server user may not be allowed into the caller's working directory, so commands run in the cluster's.
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{shlex.join(args)} failed:\n{result.stdout}{result.stderr}", pytrace=False)
    return result
