"""The one interface every carbon-intensity provider implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gensched.timing.series import Series


class SignalError(RuntimeError):
    """A carbon signal could not be read; the message names the provider and what to fix."""


class CarbonSource(Protocol):
    """``fetch`` returns gCO2/kWh per slot over as much of ``[start, end)`` as the provider has:
    actual values for the past, its forecast for the future. ``has_forecast`` is False for
    providers that only report the past (the feed then forecasts from history)."""

    name: str
    has_forecast: bool

    def fetch(self, start: datetime, end: datetime) -> Series: ...
