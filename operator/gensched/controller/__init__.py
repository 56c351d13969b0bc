"""Adapters to Kubernetes: kopf handlers, the cluster picture from the API, owned objects."""
