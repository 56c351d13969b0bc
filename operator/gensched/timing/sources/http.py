"""One HTTP GET for all providers: timeouts, status codes and bad JSON become SignalError."""

from __future__ import annotations

from typing import Any

import requests


def get_json(provider: str, url: str, *, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
             timeout: float = 10.0) -> Any:
    from gensched.timing.sources.base import SignalError

    try:
        resp = requests.get(url, params=params, headers=headers, auth=auth, timeout=timeout)
    except requests.Timeout as exc:
        raise SignalError(f"{provider}: no answer from {url} within {timeout:g}s "
                          "(raise timing.carbon.timeoutSeconds or check the network)") from exc
    except requests.RequestException as exc:
        raise SignalError(f"{provider}: cannot reach {url}: {exc.__class__.__name__}") from exc
    if resp.status_code in (401, 403):
        raise SignalError(f"{provider}: {url} refused the credentials (HTTP {resp.status_code}): "
                          "check the Secret named by timing.carbon.secretRef")
    if resp.status_code == 429:
        raise SignalError(f"{provider}: rate limited (HTTP 429): raise timing.carbon.refresh")
    if resp.status_code >= 400:
        raise SignalError(f"{provider}: {url} answered HTTP {resp.status_code}: {_detail(resp)}")
    try:
        return resp.json()
    except ValueError as exc:
        raise SignalError(f"{provider}: {url} did not return JSON") from exc


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        err = body.get("error") or body.get("message") or body
        if isinstance(err, dict):
            err = err.get("message") or err
        return str(err)[:200]
    return str(body)[:200]
