"""The fast path for plain addresses must give email_validator's answer, valid or not."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.messages import _PLAIN_ADDRESS, normalized_address

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
local_parts = st.text(alphabet=ATEXT, min_size=1, max_size=70)
labels = st.text(alphabet="abcXYZ09-", min_size=1, max_size=65)
tlds = st.sampled_from(["com", "ORG", "io", "c", "x1", "test", "local", "example", "Arpa", "uk"])
domains = st.builds(
    lambda ls, tld: ".".join([*ls, tld]), st.lists(labels, min_size=1, max_size=4), tlds
)


def email_validator_answer(address: str) -> str:
    try:
        return str(validate_email(address, check_deliverability=False).normalized)
    except EmailNotValidError:
        return "invalid"


def fast_answer(address: str) -> str:
    try:
        return normalized_address(address)
    except ValueError:
        return "invalid"


@settings(max_examples=3000, deadline=None)
@given(local_parts, domains)
def test_plain_addresses_get_email_validators_answer(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert fast_answer(address) == email_validator_answer(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Jane.Doe+news@Example.COM", "Jane.Doe+news@example.com"),
        ("a..b@example.com", "invalid"),
        ("user@mail.test", "invalid"),  # special-use domain
        ("user@xn--bcher-kva.example", "user@bücher.example"),  # IDNA: email_validator's job
        ("josé@example.com", "josé@example.com"),  # non-ASCII local part: likewise
    ],
)
def test_examples(address: str, expected: str) -> None:
    assert fast_answer(address) == expected


def test_common_addresses_take_the_fast_path() -> None:
    assert _PLAIN_ADDRESS.fullmatch("first.last+tag@sub.example.co.uk")
