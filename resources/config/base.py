"""What every part of the configuration shares: strict models and the name rule."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
