"""Posting to the alert webhook: a Slack-compatible incoming webhook (`{"text": ...}`) whose URL is a secret.

The run-failure alerts and the source freshness sensor post through this one function, so both name only
the webhook's server when it does not take a message, never the URL, whose path is Slack's token.
"""

import requests

from resources.destinations import connection_problem

TIMEOUT_SECONDS = 10


def post_alert(url: str, env_name: str, text: str) -> None:
    """Post one message; raise RuntimeError naming only the webhook's server when it is not taken."""
    try:
        response = requests.post(url, json={"text": text}, timeout=TIMEOUT_SECONDS)
    # requests' own message quotes the whole URL, whose path is the webhook's secret (Slack's token is in
    # it), and a tick's error is kept and shown in the UI: only the server is named.
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise RuntimeError(
            f"the alert webhook got no answer ({connection_problem(exc, url, TIMEOUT_SECONDS)})"
        ) from None
    except requests.RequestException as exc:
        raise RuntimeError(
            f"{env_name} does not hold an http(s) URL ({type(exc).__name__}; the value, a secret, is not shown)"
        ) from None
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"the alert webhook answered {response.status_code}")
