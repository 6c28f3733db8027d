"""What every part of the configuration shares: strict models and the name rule."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# A span of time as people write it in the file: '90 days', '12 hours', '1 week'.
DURATION_RE = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
