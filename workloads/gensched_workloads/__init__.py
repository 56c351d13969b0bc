"""Generative workloads gensched schedules: a torch decoder-only language model, its split into
model operators served by Ray Serve, a batch synthesis entrypoint and an operator profiler.

Installed with the ``workloads`` extra (torch, ray[serve]); the operator never imports this package.
"""
