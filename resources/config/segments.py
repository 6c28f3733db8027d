"""Segments: named SQL conditions over the golden profile."""

from __future__ import annotations

from pydantic import field_validator

from resources.config.base import _NAME_RE, _Strict

# Each segment is the asset `segments/<name>`; this name is the asset that retires removed segments' rows.
RESERVED_SEGMENT_NAMES = frozenset({"removed_segments"})


class SegmentConfig(_Strict):
    """A named group of profiles: a SQL boolean expression over the columns of `cdp.golden_profiles`."""

    name: str
    description: str = ""
    where: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("segment name must be lower_snake_case, e.g. 'high_value'")
        if value in RESERVED_SEGMENT_NAMES:
            raise ValueError(f"segment name '{value}' is reserved; choose another")
        return value
