"""Privacy requests: where request files are dropped and where the key of the erasure tombstones comes from."""

from __future__ import annotations

from pydantic import Field, field_validator

from resources.config.base import EnvName, _Strict, check_cron


class PrivacyConfig(_Strict):
    requests_path: str = Field(
        "data/privacy_requests",
        description="Folder watched for request files (*.csv: type,id_type,value,reference[,source]); each is "
        "processed by the privacy_request job and then replaced by a copy without the identifier values.",
    )
    key_env: EnvName = Field(
        "CDP_PRIVACY_KEY",
        description="Environment variable holding the secret key of the erasure tombstones (keyed hashes of "
        "erased identifiers). Erasure refuses to run without it, and so does extraction once a tombstone exists.",
    )
    compact_after_erasure: bool = Field(
        True,
        description="Rewrite the warehouse file after an erasure batch so no deleted row survives in free blocks.",
    )
    retention_cron: str = Field(
        "0 3 * * *",
        description="When the retention run (for sources that declare `retain`) starts, as a cron expression.",
    )

    @field_validator("retention_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_cron(value)
        return value
