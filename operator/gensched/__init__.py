"""gensched: a Kubernetes operator that schedules GPU-hungry generative AI work.

The package is split into a pure decision core (``api``, ``packing``, ``timing``,
``autoscale``) and thin adapters (``controller``, ``observe``); see
docs/architecture.md.
"""

__version__ = "0.1.0"
GROUP = "gensched.io"
VERSION = "v1alpha1"
