"""Kubernetes resource quantities ('500m', '4Gi', '1e12', '.5', '100n') in apimachinery's grammar.

The pure core imports no kubernetes code (its package import loads the whole API client), so the
grammar is written out here: the regex below is apimachinery's ``resource.Quantity`` (also the CRD
schema's pattern), and tests/unit/test_quantity.py checks every accepted form gives the same value as
the kubernetes client's ``parse_quantity``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
_GRAMMAR = re.compile(QUANTITY)
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse_quantity(text: str | int | float) -> Decimal:
    """Value of a quantity in base units (cores, bytes); ValueError naming the accepted forms."""
    s = str(text).strip()
    try:
        if not _GRAMMAR.match(s):
            raise ValueError
        if s[-2:] in _BINARY:
            return Decimal(s[:-2]) * (2 ** _BINARY[s[-2:]])
        if s[-1] in _DECIMAL:
            return Decimal(s[:-1]).scaleb(_DECIMAL[s[-1]])
        return Decimal(s)  # plain or with a decimal exponent ('1e12', '1.5E3')
    except (ValueError, InvalidOperation):
        raise ValueError(f"{s[:80]!r} is not a Kubernetes quantity such as '500m', '2', '4Gi' or '1e9'") from None
