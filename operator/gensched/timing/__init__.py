"""When batch work starts (pure, no Kubernetes): off-peak windows and, later, carbon signals."""

from gensched.timing.planner import TimingDecision, decide_start
from gensched.timing.windows import next_window_start, window_intervals

__all__ = ["TimingDecision", "decide_start", "next_window_start", "window_intervals"]
