"""Source freshness: a warning check per source that declares `expected_every`, judged against the clock.

A source that stops sending is otherwise silent: nothing fails, the profiles just age. The check
`fresh` on `raw/<source>` fails (severity WARN) when no file of the source has loaded for longer than
`expected_every`. Its result is reported by the `source_freshness` sensor, which reads when a file last
loaded from the asset's last materialization (Dagster's own record; the warehouse is never opened: a run
that loads nothing records the time of the last load it found) on every tick, and
records an evaluation when the verdict changes, and once an hour while it holds, so the UI always shows
the verdict of the last hour. No refresh or extract run evaluates it (a run that loads nothing would
show it skipped); it can be executed by hand from the asset's page as well.

A verdict nobody looks at does not help at 3 a.m.: when a source turns stale, and when it is fresh again,
the sensor also posts it to the run-failure alerts' webhook (`alerts.webhook_url_env`), once per change.
A message the webhook does not take is posted again on the next tick, until it does.
"""

import json
import time
from datetime import UTC, datetime

import dagster as dg

from resources.alerts import post_alert
from resources.config import CDPConfig, SourceConfig
from resources.landing import LAST_FILE_LOADED_AT

CHECK_NAME = "fresh"
# A verdict that holds is recorded again after this long, so its evaluation never looks stale.
REPEAT_SECONDS = 3600


def raw_key(source: SourceConfig) -> dg.AssetKey:
    """The source's extract asset (cdp_assets/extract/assets.py); a sensor never imports the stages."""
    return dg.AssetKey(["raw", source.name])


def freshness_evaluation(instance: dg.DagsterInstance, source: SourceConfig, now: float) -> dg.AssetCheckEvaluation:
    """The verdict on `source` at `now` (a Unix time): when it last loaded a file, and whether that is
    within `expected_every`."""
    within = source.expected_within
    assert within is not None
    latest = instance.get_latest_materialization_event(raw_key(source))
    loaded = None
    if latest is not None and latest.asset_materialization is not None:
        recorded = latest.asset_materialization.metadata.get(LAST_FILE_LOADED_AT)
        # A run that loaded nothing materializes the extract too; what counts is when a file last loaded
        # (an extract of an earlier version recorded no such entry: its run's time stands in).
        if isinstance(recorded, dg.TimestampMetadataValue):
            loaded = recorded.value
        elif recorded is None:
            loaded = latest.timestamp
    age = None if loaded is None else now - loaded
    passed = age is not None and age <= within.total_seconds()
    metadata: dict[str, dg.RawMetadataValue] = {
        "expected_every": source.expected_every,
        "last_loaded_at": datetime.fromtimestamp(loaded, UTC).isoformat() if loaded else "never",
    }
    if age is not None:
        metadata["hours_since_last_load"] = dg.MetadataValue.float(round(age / 3600, 2))
    return dg.AssetCheckEvaluation(
        asset_key=raw_key(source),
        check_name=CHECK_NAME,
        passed=passed,
        metadata=metadata,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if passed else f"no file of {source.name} has loaded for over {source.expected_every}",
    )


def _fresh_check(source: SourceConfig) -> dg.AssetChecksDefinition:
    """The source's `fresh` check, for executing by hand. The check takes no parameter but its context:
    any other would be read as the asset's value to load."""

    @dg.asset_check(
        asset=raw_key(source),
        name=CHECK_NAME,
        description=f"A file of {source.name} has loaded within {source.expected_every} (expected_every).",
    )
    def fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        verdict = freshness_evaluation(context.instance, source, time.time())
        return dg.AssetCheckResult(
            passed=verdict.passed,
            metadata=verdict.metadata,
            severity=dg.AssetCheckSeverity.WARN,
            description=verdict.description,
        )

    return fresh


def build_freshness_checks(config: CDPConfig) -> list[dg.AssetChecksDefinition]:
    """The `fresh` check of every source with `expected_every`."""
    return [_fresh_check(source) for source in config.sources if source.expected_within is not None]


def freshness_text(source: SourceConfig, verdict: dg.AssetCheckEvaluation, ui_url: str) -> str:
    """The message a change of verdict posts: which source, since when, and the link to its asset."""
    last = verdict.metadata["last_loaded_at"]
    last_loaded = getattr(last, "value", last)
    if verdict.passed:
        head = f"Source {source.name} is fresh again: a file loaded at {last_loaded}."
    else:
        head = (
            f"Source {source.name} is stale: no file has loaded for over {source.expected_every} "
            f"(expected_every); last file loaded: {last_loaded}."
        )
    return f"{head}\n<{ui_url.rstrip('/')}/assets/raw/{source.name}|Open the asset>"


def build_freshness_sensor(config: CDPConfig) -> dg.SensorDefinition | None:
    """The sensor, or None when no source declares `expected_every`."""
    sources = [s for s in config.sources if s.expected_within is not None]
    if not sources:
        return None

    @dg.sensor(
        name="source_freshness",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks a source stale (the WARN check 'fresh') when no file of it loaded within expected_every, and posts "
            "the change to the alert webhook."
        ),
    )
    def source_freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = time.time()
        # Per source: [the verdict, when it was recorded, the verdict the alert webhook was last told].
        previous: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
        cursor, events, problems = {}, [], []
        url = config.alerts.webhook_url
        for source in sources:
            verdict = freshness_evaluation(context.instance, source, now)
            last = previous.get(source.name)
            # A source starts out taken for fresh: it is its turning stale that is news.
            told = last[2] if last is not None and len(last) > 2 else True
            if last is None or last[0] != verdict.passed or now - last[1] >= REPEAT_SECONDS:
                events.append(verdict)
                entry = [verdict.passed, now]
            else:
                entry = list(last[:2])
            if url is not None and told != verdict.passed:
                try:
                    post_alert(
                        url, config.alerts.webhook_url_env, freshness_text(source, verdict, config.alerts.ui_url)
                    )
                    told = verdict.passed
                except RuntimeError as exc:
                    problems.append(f"{source.name}: {exc}")
            cursor[source.name] = [*entry, told]
        if problems:
            context.log.warning("; ".join(problems) + "; posted again on the next tick")
        return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True))

    return source_freshness
