"""Privacy requests as received: from a requests file in the requests folder, or typed in the Launchpad.

A requests file is a CSV with the header `type,id_type,value,reference` and an optional `source` column
(for `source_record` requests). Each line is one request; a line that cannot be one (an unknown type, an
unknown identifier type, no value) is rejected on its own, with the line and field named, and the others go
on. After the run the file is replaced in `processed/` by a copy holding each request's id, reference and status but
not its identifier value.

The Launchpad takes the same fields, but Dagster keeps a run's configuration in its storage, in clear, for
as long as run history is kept. So an e-mail or phone typed there would outlive the erasure it asked for:
such values are refused in the Launchpad (the request names the file route instead); the run configuration
may name a requests file, a customer id, a source record or another configured identifier type.
"""

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from cdp_assets.privacy.erasure import CUSTOMER_ID, SOURCE_RECORD, Request, known_id_types
from resources.config import CDPConfig
from resources.identifiers import contact_kinds

TYPES = ("erase", "access", "suppress", "unsuppress")
HEADER = ("type", "id_type", "value", "reference")


class RequestSpec(dg.Config):
    """One request typed in the Launchpad."""

    type: str = Field(description="erase | access | suppress | unsuppress")
    id_type: str = Field(
        description="customer_id (current or alias), source_record (with `source`), or a configured identifier "
        "type other than an e-mail or phone (those go in a requests file: run configuration is kept in clear)"
    )
    value: str
    reference: str | None = Field(None, description="The requester's reference, e.g. a ticket number.")
    source: str | None = Field(None, description="The source of a source_record request.")


class PrivacyRequestConfig(dg.Config):
    """Run configuration of the privacy_request job: a requests file of the requests folder, and/or requests."""

    requests_file: str | None = Field(
        None, description="Name of a CSV file in the requests folder (privacy.requests_path); the sensor sets it."
    )
    requests: list[RequestSpec] = Field(default_factory=list)
    retention: bool = Field(
        False, description="Also delete the rows past their source's `retain` period (the retention schedule sets it)."
    )


@dataclass(frozen=True)
class RejectedLine:
    """A request that could not be taken: where it is, which field and why (never the value)."""

    request_id: str
    row_number: int | None
    field: str
    reason: str
    # The requester's reference (a ticket number), when the line has one where the header puts it.
    reference: str | None = None


def _check(config: CDPConfig, type_: str, id_type: str, value: str, source: str | None) -> tuple[str, str] | None:
    """(field, reason) of what is wrong with a request, or None."""
    if type_ not in TYPES:
        return "type", f"unknown request type; expected one of {list(TYPES)}"
    if id_type not in known_id_types(config):
        # Not repeated: a line whose columns are shifted has the e-mail or phone here, and the reason is kept
        # in the quarantine and the processed file, which hold no value.
        return "id_type", f"unknown identifier type (not repeated here); expected one of {known_id_types(config)}"
    if not value.strip():
        return "value", "empty value"
    if id_type == SOURCE_RECORD and source not in {s.name for s in config.sources}:
        return "source", f"a source_record request names one of the sources {[s.name for s in config.sources]}"
    return None


def request_id(origin: str, line: int) -> str:
    """A request's id: stable for the same file content and line, so a retried run does not do it twice."""
    return f"prq_{hashlib.sha256(origin.encode()).hexdigest()[:12]}_{line}"


def from_file(config: CDPConfig, path: Path) -> tuple[list[Request], list[RejectedLine]]:
    """The requests of one file, and its lines that are not requests."""
    content = path.read_bytes()
    origin = path.name + ":" + hashlib.sha256(content).hexdigest()
    requests: list[Request] = []
    rejected: list[RejectedLine] = []
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [RejectedLine(request_id(origin, 0), None, "file", "not UTF-8 text")]
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [h for h in HEADER if h not in header]
    if missing:
        return [], [RejectedLine(request_id(origin, 1), 1, "header", f"no column(s) {missing}; expected {HEADER}")]
    position = {name: header.index(name) for name in header}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            rejected.append(
                RejectedLine(request_id(origin, line), line, "line", f"{len(row)} fields, the header has {len(header)}")
            )
            continue

        def cell(name: str, row: list[str] = row) -> str:
            return row[position[name]].strip() if name in position else ""

        problem = _check(config, cell("type"), cell("id_type"), cell("value"), cell("source") or None)
        if problem:
            rejected.append(RejectedLine(request_id(origin, line), line, *problem, cell("reference") or None))
            continue
        requests.append(
            Request(
                request_id(origin, line),
                cell("type"),
                cell("id_type"),
                cell("value"),
                cell("reference") or None,
                cell("source") or None,
            )
        )
    return requests, rejected


def from_run_config(
    config: CDPConfig, specs: list[RequestSpec], run_id: str
) -> tuple[list[Request], list[RejectedLine]]:
    """The Launchpad's requests; e-mails and phones refused (see the module docstring)."""
    requests: list[Request] = []
    rejected: list[RejectedLine] = []
    contact_types = {
        name for name, t in config.identity.identifier_types.items() if t.normalize in contact_kinds()
    } | set(contact_kinds())
    for index, spec in enumerate(specs):
        rid = request_id(run_id, index)
        problem = _check(config, spec.type, spec.id_type, spec.value, spec.source)
        if problem is None and spec.id_type in contact_types:
            problem = (
                "id_type",
                f"{spec.id_type} values are not taken from run configuration, which Dagster keeps in clear; "
                "put the request in a CSV file in the requests folder (privacy.requests_path)",
            )
        if problem:
            rejected.append(RejectedLine(rid, None, *problem))
        else:
            requests.append(Request(rid, spec.type, spec.id_type, spec.value, spec.reference, spec.source))
    return requests, rejected


__all__ = ["CUSTOMER_ID", "SOURCE_RECORD", "TYPES", "PrivacyRequestConfig", "RequestSpec", "from_file"]
