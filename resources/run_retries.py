"""When a sensor starts a failed run again: the one backoff of the landing sensor's extract retries and the
privacy requests sensor's file retries (sensors/landing.py, sensors/privacy.py). A sensor imports only
resources, so the rule lives here."""

import dagster as dg

RETRY_FIRST_AFTER_SECONDS = 60
RETRY_LONGEST_WAIT_SECONDS = 3600
RETRY_ATTEMPTS = 5


def next_retry(run: dg.RunRecord, tag: str) -> tuple[int | None, float]:
    """The attempt number and due time of the retry of a failed run whose `tag` counts the retries before it:
    RETRY_FIRST_AFTER_SECONDS after the failure, twice as long after each retry that failed again (up to
    RETRY_LONGEST_WAIT_SECONDS), None past RETRY_ATTEMPTS in a row. The one backoff of the sensors' retries."""
    attempt = int(run.dagster_run.tags.get(tag, "0")) + 1
    due = (run.end_time or 0.0) + min(RETRY_FIRST_AFTER_SECONDS * 2 ** (attempt - 1), RETRY_LONGEST_WAIT_SECONDS)
    return (attempt if attempt <= RETRY_ATTEMPTS else None), due
