"""Kubernetes resource quantities ('500m', '4Gi', '1.5') without the kubernetes client."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Value of a quantity in base units (cores, bytes)."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as '500m', '2', '4Gi'")
    return Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
