"""The event collector: where it listens and how it cuts its landing files (write keys are secrets and
come from the environment, see collector/keys.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from resources.config.base import _Strict


class CollectorConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address the collector listens on; 0.0.0.0 for every interface.")
    port: int = Field(8088, ge=0, le=65535, description="Port of the collector's HTTP tracking API (0: any free port).")
    rotate_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="A landing file is published once it holds this many bytes."
    )
    rotate_seconds: float = Field(
        30.0, gt=0, description="A landing file is published at the latest this long after its first event."
    )
    allowed_origins: list[str] = Field(
        ["*"],
        description=(
            "Web pages (origins, e.g. 'https://shop.example.com') whose browsers may send events across origins "
            "(CORS): analytics.js on a shop's pages posting to a collector on another host. '*': any page, as "
            "Segment's API allows (write keys are public in a browser); an empty list: none."
        ),
    )
    max_connections: int = Field(
        256,
        ge=1,
        description=(
            "Connections served at once, each by a thread; one more is answered 503 (which the SDKs retry) and "
            "closed, so clients that open connections and stall cannot take the machine's memory."
        ),
    )
    timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A connection sending nothing for this long, idle between requests or stalled in one, is closed.",
    )
    client_ip: Literal["off", "peer", "forwarded"] = Field(
        "off",
        description=(
            "Whether an event without context.ip gets the sender's address there, as Segment's API adds it: "
            "'peer' the address that connected (the collector faces the internet), 'forwarded' the last "
            "address of X-Forwarded-For, which the proxy in front of the collector appends (else the peer), "
            "'off' none (an address is personal data)."
        ),
    )
