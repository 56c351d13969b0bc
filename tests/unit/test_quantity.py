"""The core's quantity parser gives what the kubernetes client's parser gives, on apimachinery's grammar."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity as client_parse

from gensched.api.quantity import parse_quantity

digits = st.text("0123456789", min_size=1, max_size=6)
number = st.one_of(digits, st.builds(lambda a, b: f"{a}.{b}", digits, st.text("0123456789", max_size=4)),
                   st.builds(lambda b: f".{b}", digits))
suffix = st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
                          "e3", "E-2", "e+4", "e0"])


@given(sign=st.sampled_from(["", "+", "-"]), num=number, suf=suffix)
def test_every_form_of_the_grammar_has_the_client_parsers_value(sign: str, num: str, suf: str) -> None:
    text = f"{sign}{num}{suf}"
    assert parse_quantity(text) == client_parse(text)


@pytest.mark.parametrize("text, value", [("500m", Decimal("0.5")), ("4Gi", Decimal(4 * 2**30)),
                                         ("1e12", Decimal(10**12)), (".5", Decimal("0.5")),
                                         ("100n", Decimal("1E-7")), (2, Decimal(2)), (0.25, Decimal("0.25"))])
def test_documented_examples(text, value) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "4 Gi", "1ki", "1K", "NaN", "inf", "1e3k", "--1", "1.2.3", "0x10"])
def test_what_the_api_server_rejects_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity such as '500m'"):
        parse_quantity(text)
