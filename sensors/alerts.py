"""Run-failure alerts: a short message to a Slack-compatible webhook when any run of the platform fails.

Nobody watches the UI at 3 a.m.; a failed nightly refresh that leaves segments a day stale should reach
the people who can fix it. The message names the run, its job, the failed steps (one per asset:
`syncs__crm` is asset `syncs/crm`) and the first line of the error that made each fail (not Dagster's
wrapper around it), with a link to the run in the UI; the URL comes from the environment variable
`alerts.webhook_url_env` names (a secret, never in cdp.yaml). Error messages reach the webhook as the
platform wrote them: stages redact customer values from their errors, so none are posted. A webhook
that does not answer with 2xx fails the sensor's tick, so the UI shows that alerts are not getting
through, and Dagster evaluates the failure again on the next tick.
"""

import dagster as dg
import requests
from dagster._utils.error import SerializableErrorInfo

from resources.config import CDPConfig
from resources.destinations import connection_problem

MAX_ERROR_CHARS = 300
# The errors Dagster raises around one from a step's code, whose message says only where it happened.
_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}
TIMEOUT_SECONDS = 10


def alert_text(run: dg.DagsterRun, failures: list[tuple[str, str]], ui_url: str) -> str:
    """The message: what failed, why, and where to look."""
    lines = [f"Run {run.run_id[:8]} of {run.job_name} failed."]
    for step, error in failures or [("run", "the run failed before any step did")]:
        first_line = (error.strip().splitlines() or [""])[0][:MAX_ERROR_CHARS]
        lines.append(f"• {step}: {first_line}")
    lines.append(f"<{ui_url.rstrip('/')}/runs/{run.run_id}|Open the run>")
    return "\n".join(lines)


def cause_of(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The error that made a step fail, not Dagster's wrapper around it: a step's failure reads
    "DagsterExecutionStepExecutionError: Error occurred while executing op ...", and what went wrong (a
    folder that is a file, a refused value) is its cause."""
    while error.cause is not None and error.cls_name in _WRAPPERS:
        error = error.cause
    return error


def build_alert_sensor(config: CDPConfig) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_alerts",
        # Every failed run of the instance, not only those the code location launched: a run started with
        # `dagster job execute` (the headless way the README gives) belongs to no code location.
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts a message to the alert webhook (alerts.webhook_url_env) when a run fails.",
    )
    def run_failure_alerts(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        url = config.alerts.webhook_url
        if url is None:
            return dg.SkipReason(f"{config.alerts.webhook_url_env} is not set: no alert webhook")
        failures = []
        for event in context.get_step_failure_events():
            error = event.event_specific_data.error if event.event_specific_data else None
            failures.append((event.step_key or "run", cause_of(error).message if error else ""))
        text = alert_text(context.dagster_run, failures, config.alerts.ui_url)
        try:
            response = requests.post(url, json={"text": text}, timeout=TIMEOUT_SECONDS)
        # requests' own message quotes the whole URL, whose path is the webhook's secret (Slack's token is in
        # it), and a tick's error is kept and shown in the UI: only the server is named.
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem = connection_problem(exc, url, TIMEOUT_SECONDS)
            raise RuntimeError(f"the alert webhook got no answer ({problem}); the failure is reported again") from None
        except requests.RequestException as exc:
            raise RuntimeError(
                f"{config.alerts.webhook_url_env} does not hold an http(s) URL ({type(exc).__name__}; the value, "
                "a secret, is not shown); the failure is reported again"
            ) from None
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"the alert webhook answered {response.status_code}; the failure is reported again")
        context.log.info(f"alert posted for run {context.dagster_run.run_id}")
        return None

    return run_failure_alerts
