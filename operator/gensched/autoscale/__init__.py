"""How many replicas each model operator gets (pure); RayService rendering for serving jobs."""

from gensched.autoscale.rayservice import operator_plan, render_rayservice

__all__ = ["operator_plan", "render_rayservice"]
