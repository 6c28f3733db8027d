"""Run-failure alerts: a short message to a Slack-compatible webhook when any run of the platform fails.

Nobody watches the UI at 3 a.m.; a failed nightly refresh that leaves segments a day stale should reach
the people who can fix it. The message names the run, what launched it (its job, or the sensor or schedule
behind an automation run), the failed steps as the assets and checks they materialize (`syncs/crm`), the
first line of the error that made each fail (not Dagster's wrapper around it), with a link to the run in
the UI; the URL comes from the environment variable `alerts.webhook_url_env` names (a secret, never in
cdp.yaml). Error messages reach the webhook as the platform wrote them: stages redact customer values from
their errors, so none are posted.

An alert is delivered at least once. The sensor keeps its own cursor over the instance's run failures
(every run, whichever code location or `dagster job execute` made it) and the alerts it has not delivered
yet: when the webhook does not answer with 2xx or cannot be reached, the alert stays pending and is posted
again on the next tick, before any newer one, until the webhook takes it. Dagster's `run_failure_sensor`
would not do this: it moves past a run whose alert raised, so an alert lost to a webhook outage never came.
A file quarantined whole (the `files_readable` warning of its source's extract) fails no run, yet loads
none of its rows: the sensor posts it too, once for each new set of such files of a source.

A tick that could deliver nothing and learned of no new failure fails, so the UI shows that alerts are not
getting through; one that must keep a newer failure pending is skipped with the same reason.
"""

import json
import re
from typing import Any

import dagster as dg

from resources.alerts import post_alert
from resources.config import CDPConfig, SourceConfig
from resources.landing import FILES_READABLE_CHECK

MAX_ERROR_CHARS = 300
# The errors Dagster raises around one from a step's code, whose message says only where it happened.
_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}
# Failed runs read from the event log per tick; more wait for the next tick.
FAILURES_PER_TICK = 100
# The events that end a step: a step started and never ended was under way when its run was failed.
_STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}
# The tags Dagster gives a run an automation sensor, a sensor or a schedule launched.
_LAUNCHED_BY_TAGS = ("dagster/sensor_name", "dagster/schedule_name")


def alert_text(run: dg.DagsterRun, failures: list[tuple[str, str]], ui_url: str) -> str:
    """The message: what failed, why, and where to look. `failures` pairs each failed step's name (an asset
    or check, as `step_names` gives it) with its error."""
    lines = [f"Run {run.run_id[:8]} of {launched_by(run)} failed."]
    for step, error in failures or [("run", "the run failed before any step did")]:
        first_line = (error.strip().splitlines() or [""])[0][:MAX_ERROR_CHARS]
        lines.append(f"• {step}: {first_line}")
    lines.append(f"<{ui_url.rstrip('/')}/runs/{run.run_id}|Open the run>")
    return "\n".join(lines)


def launched_by(run: dg.DagsterRun) -> str:
    """The run's job, or, for the jobs Dagster makes up for a sensor's or schedule's asset selection
    (`__ASSET_JOB`, `__anonymous_asset_job_...`), the sensor or schedule that launched it."""
    if not run.job_name.startswith("__"):
        return run.job_name
    launcher = next((run.tags[tag] for tag in _LAUNCHED_BY_TAGS if tag in run.tags), None)
    return launcher or "an asset selection"


def step_names(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """Each step key of the run → what an operator knows it as: the assets it materializes (`syncs__crm` is
    `syncs/crm`), or for a step that only runs checks, those checks (`profiles/golden_profiles:equals_a_rebuild`),
    as the run planned them."""
    assets: dict[str, list[str]] = {}
    checks: dict[str, list[str]] = {}
    for kind, into in (
        (dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, assets),
        (dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, checks),
    ):
        for entry in instance.all_logs(run.run_id, of_type=kind):
            event = entry.dagster_event
            if event is None or event.step_key is None or event.event_specific_data is None:
                continue
            data = event.event_specific_data
            name = data.asset_key.to_user_string()
            into.setdefault(event.step_key, []).append(f"{name}:{data.check_name}" if into is checks else name)
    return {step: ", ".join(assets.get(step) or checks[step]) for step in {*assets, *checks}}


def error_line(error: Any) -> str:
    """The message of the error that made a step fail (a `SerializableErrorInfo`), not Dagster's wrapper
    around it: a step's failure reads "DagsterExecutionStepExecutionError: Error occurred while executing op
    ...", and what went wrong (a folder that is a file, a refused value) is its cause. The class keeps its
    name without its module (`Failure: ...`, not `dagster._core.definitions.events.Failure: ...`)."""
    while error.cause is not None and error.cls_name in _WRAPPERS:
        error = error.cause
    return re.sub(rf"^(?:\w+\.)+(?={re.escape(error.cls_name or '')}: )", "", error.message or "")


def run_failures(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[tuple[str, str]]:
    """Each failed step of the run, named as `step_names` does, with the first line of its error. A run with
    no failed step was failed from outside (its process killed or out of memory, found dead by run
    monitoring, or cancelled): then the steps it was in the middle of, with the reason it was failed."""
    names = step_names(instance, run)
    failures = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = event.event_specific_data.error if event and event.event_specific_data else None
        step = (event.step_key if event else None) or "run"
        failures.append((names.get(step, step), error_line(error) if error else ""))
    if failures:
        return failures
    run_failed = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    reason = (run_failed[-1].dagster_event.message if run_failed and run_failed[-1].dagster_event else None) or ""
    reason = reason.strip() or "the run failed before any step did"
    started: list[str] = []
    for entry in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START, *_STEP_ENDS}):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started.append(event.step_key)
        elif event.step_key in started:
            started.remove(event.step_key)
    if not started:
        return [("run", reason)]
    return [(names.get(step, step), f"stopped in this step: {reason}") for step in started]


def unreadable_files(instance: dg.DagsterInstance, source: SourceConfig) -> tuple[bool, str | None]:
    """Whether the source's `files_readable` check has a verdict, and the files its last one found unreadable
    and quarantined whole, as it names them (or the glob that matches nothing; None when it passed). A check
    planned by a run under way, or by one that failed before evaluating it, has no verdict: what was told of
    the one before stands."""
    key = dg.AssetCheckKey(dg.AssetKey(["raw", source.name]), FILES_READABLE_CHECK)
    record = instance.get_latest_asset_check_evaluation_record(key)
    event = record.event.dagster_event if record and record.event else None
    evaluation = event.event_specific_data if event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return False, None
    if evaluation.passed:
        return True, None
    return True, evaluation.description or "unreadable files"


def unreadable_files_text(source: SourceConfig, files: str, ui_url: str) -> str:
    """The message for a source's newly quarantined files: which, what it means, and where the reasons are."""
    what = (
        files if files.startswith("no file matches") else f"files quarantined whole, none of their rows loaded: {files}"
    )
    return (
        f"Source {source.name}: {what}.\n"
        f"<{ui_url.rstrip('/')}/assets/raw/{source.name}|Open the asset (check files_readable has the reasons)>"
    )


def _latest_failure_cursor(instance: dg.DagsterInstance) -> str:
    """Where a sensor that never ran starts: after the newest failure there is (older ones are history)."""
    return instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).cursor


def build_alert_sensor(config: CDPConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name="run_failure_alerts",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts a message to the alert webhook (alerts.webhook_url_env) when a run fails.",
    )
    def run_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        after = state.get("after") or _latest_failure_cursor(instance)
        pending: list[str] = list(state.get("pending", []))
        new = instance.fetch_run_status_changes(
            dg.DagsterEventType.RUN_FAILURE, limit=FAILURES_PER_TICK, cursor=after, ascending=True
        )
        for record in new.records:
            if record.event_log_entry.run_id not in pending:
                pending.append(record.event_log_entry.run_id)
        url = config.alerts.webhook_url
        if url is None:
            # Nowhere to post: the failures of this time are not kept for a webhook set later.
            return dg.SensorResult(
                cursor=json.dumps({"after": new.cursor, "pending": [], "files": {}}, sort_keys=True),
                skip_reason=f"{config.alerts.webhook_url_env} is not set: no alert webhook",
            )
        problem = None
        while pending and problem is None:
            run = instance.get_run_by_id(pending[0])
            if run is not None:
                try:
                    post_alert(
                        url,
                        config.alerts.webhook_url_env,
                        alert_text(run, run_failures(instance, run), config.alerts.ui_url),
                    )
                except RuntimeError as exc:
                    problem = str(exc)
                    break
                context.log.info(f"alert posted for run {run.run_id}")
            pending.pop(0)
        held = 0  # a source's unreadable files not told yet
        told: dict[str, str] = dict(state.get("files", {}))
        for source in config.sources:
            if problem is not None:
                break
            known, files = unreadable_files(instance, source)
            if not known:
                continue
            if files is None:
                told.pop(source.name, None)  # readable again: a file failing later is news again
            elif told.get(source.name) != files:
                try:
                    post_alert(
                        url, config.alerts.webhook_url_env, unreadable_files_text(source, files, config.alerts.ui_url)
                    )
                except RuntimeError as exc:
                    problem, held = str(exc), held + 1
                    break
                told[source.name] = files
        cursor = json.dumps({"after": new.cursor, "pending": pending, "files": told}, sort_keys=True)
        if problem is None:
            return dg.SensorResult(cursor=cursor)
        reason = f"{problem}; {len(pending) + held} alert(s) held back, posted again on the next tick"
        if cursor == context.cursor:
            raise RuntimeError(reason)  # nothing to remember: the tick fails, and shows it
        return dg.SensorResult(cursor=cursor, skip_reason=reason)

    return run_failure_alerts
