"""Kubernetes resource quantities ('500m', '4Gi', '1e12', '.5', '100n'), parsed by the kubernetes client.

The client's ``parse_quantity`` is a pure function (no API client, no network): the one kubernetes
import the pure core allows itself, so quantities mean exactly what they mean to the API server.
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity as _parse

# apimachinery's quantity grammar (resource.Quantity), for the CRD schema
QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Value of a quantity in base units (cores, bytes); ValueError naming the accepted forms."""
    try:
        return Decimal(_parse(str(text).strip()))
    except (ValueError, TypeError, ArithmeticError):
        raise ValueError(f"{str(text)[:80]!r} is not a Kubernetes quantity such as '500m', '2', '4Gi' or '1e9'") \
            from None
