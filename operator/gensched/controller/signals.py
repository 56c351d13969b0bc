"""Carbon feeds per SchedulingPolicy, kept across reconciles so caching and fallback work.
Secrets are read from the operator's namespace (``GENSCHED_NAMESPACE``)."""

from __future__ import annotations

import os

from gensched.api.policy import CarbonSpec
from gensched.controller.kube import kube
from gensched.timing.sources.base import SignalError
from gensched.timing.sources.factory import build_feed
from gensched.timing.sources.feed import SignalFeed

_FEEDS: dict[tuple[str, str], SignalFeed] = {}


def operator_namespace() -> str:
    return os.environ.get("GENSCHED_NAMESPACE", "gensched-system")


def feed_for(policy_name: str, carbon: CarbonSpec) -> SignalFeed:
    """The feed of a policy's carbon settings (rebuilt when they change). Raises SignalError
    when it cannot be built (e.g. the Secret is missing)."""
    key = (policy_name, carbon.model_dump_json())
    feed = _FEEDS.get(key)
    if feed is None:
        ns = operator_namespace()
        feed = build_feed(carbon, lambda name, k: kube().read_secret(ns, name, k))
        for old in [k for k in _FEEDS if k[0] == policy_name]:
            del _FEEDS[old]
        _FEEDS[key] = feed
    return feed


__all__ = ["SignalError", "feed_for", "operator_namespace"]
