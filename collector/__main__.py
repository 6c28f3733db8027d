"""`python -m collector`: run the collector on the configuration's Segment-format sources."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from collector.keys import WriteKeyError, load_write_keys
from collector.server import CollectorServer
from resources.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collector", description=__doc__)
    parser.add_argument("--config", help="cdp.yaml to read (default: $CDP_CONFIG, then ./cdp.yaml)")
    parser.add_argument("--host", help="overrides collector.host")
    parser.add_argument("--port", type=int, help="overrides collector.port")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        sources = config.collector_sources
        if not sources:
            raise ConfigError("no source has format 'segment': the collector would have nowhere to write")
        keys = load_write_keys(os.environ, [s.name for s in sources])
    except (ConfigError, WriteKeyError) as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="collector: %(message)s")
    settings = config.collector
    try:
        server = CollectorServer(
            (args.host or settings.host, settings.port if args.port is None else args.port),
            keys,
            {s.name: config.collector_folder(s) for s in sources if s.name in keys.sources},
            rotate_bytes=settings.rotate_bytes,
            rotate_seconds=settings.rotate_seconds,
            allowed_origins=tuple(settings.allowed_origins),
            client_ip=settings.client_ip,
            max_connections=settings.max_connections,
            timeout_seconds=settings.timeout_seconds,
        )
    except OSError as exc:  # the port is taken, or another collector writes to a source's folder
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    for spool in server.spools.values():
        for path in spool.recovered:
            print(f"collector: published {path} left by an earlier run", file=sys.stderr)
    # SIGTERM (make dev's exit, a service manager) stops like Ctrl-C: the open files are published. The
    # server is stopped from another thread, since the handler runs in the one serving.
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    print(f"collector: listening on {server.url} for {', '.join(sorted(server.spools))}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
