"""Signed unsubscribe tokens: round trip, tampering, and malformed payloads."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from postroom.errors import ConfigurationError, InvalidMessageError
from postroom.rendering import UnsubscribeClaim, UnsubscribeTokens, make_token, read_token


def test_round_trip() -> None:
    tokens = UnsubscribeTokens("k1")
    token = tokens.make_token("reader@example.com", "new_post_notification", "01SEND")
    assert tokens.read_token(token) == UnsubscribeClaim(
        recipient="reader@example.com", email_type="new_post_notification", send_id="01SEND"
    )
    assert len(token) < 140  # short keys keep List-Unsubscribe compact
    assert "/" not in token and "+" not in token  # URL-safe


def test_module_functions_match_the_class() -> None:
    token = make_token("a@example.com", "welcome", "s1", secret_key="k1")
    assert read_token(token, secret_key="k1") == UnsubscribeTokens("k1").read_token(token)


@pytest.mark.parametrize("mutate", [lambda t: t[:-2] + "xx", lambda t: "x" + t, lambda t: ""])
def test_tampered_token_is_refused(mutate: object) -> None:
    tokens = UnsubscribeTokens("k1")
    token = tokens.make_token("a@example.com", "welcome", "s1")
    with pytest.raises(InvalidMessageError) as caught:
        tokens.read_token(mutate(token))  # type: ignore[operator]
    assert caught.value.field == "token"


def test_other_key_or_salt_is_refused() -> None:
    token = UnsubscribeTokens("k1").make_token("a@example.com", "welcome", "s1")
    with pytest.raises(InvalidMessageError):
        UnsubscribeTokens("k2").read_token(token)
    foreign = URLSafeSerializer("k1", salt="another-purpose").dumps(
        {"r": "a@example.com", "t": "welcome", "s": "s1"}
    )
    with pytest.raises(InvalidMessageError):
        UnsubscribeTokens("k1").read_token(str(foreign))


@pytest.mark.parametrize(
    "payload", [["a", "b", "c"], {"r": "a@example.com"}, {"r": 1, "t": "w", "s": "s"}]
)
def test_validly_signed_but_malformed_payload(payload: object) -> None:
    token = URLSafeSerializer("k1", salt="postroom-unsubscribe").dumps(payload)
    with pytest.raises(InvalidMessageError, match="malformed"):
        UnsubscribeTokens("k1").read_token(str(token))


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        UnsubscribeTokens("")


def test_a_list_id_travels_in_the_token() -> None:
    tokens = UnsubscribeTokens("k1")
    token = tokens.make_token("a@example.com", "new_post_notification", "c1.7", "jane")
    assert tokens.read_token(token).list_id == "jane"
    assert tokens.read_token(tokens.make_token("a@example.com", "w", "s1")).list_id is None


def test_a_token_from_before_lists_still_verifies() -> None:
    old = URLSafeSerializer("k1", salt="postroom-unsubscribe").dumps(
        {"r": "a@example.com", "t": "welcome", "s": "s1"}
    )
    assert UnsubscribeTokens("k1").read_token(str(old)) == UnsubscribeClaim(
        recipient="a@example.com", email_type="welcome", send_id="s1", list_id=None
    )


@pytest.mark.parametrize("list_id", ["", 7, ["jane"]])
def test_a_malformed_list_id_is_refused(list_id: object) -> None:
    token = URLSafeSerializer("k1", salt="postroom-unsubscribe").dumps(
        {"r": "a@example.com", "t": "w", "s": "s1", "l": list_id}
    )
    with pytest.raises(InvalidMessageError, match="malformed"):
        UnsubscribeTokens("k1").read_token(str(token))


def test_rotation_verifies_previous_keys_and_signs_with_the_current_one() -> None:
    old_token = UnsubscribeTokens("old").make_token("a@example.com", "w", "s1", "jane")
    rotated = UnsubscribeTokens("new", previous_keys=["older", "old"])
    assert rotated.read_token(old_token).list_id == "jane"
    fresh = rotated.make_token("a@example.com", "w", "s2")
    assert UnsubscribeTokens("new").read_token(fresh).send_id == "s2"  # signed with "new"
    with pytest.raises(InvalidMessageError):
        UnsubscribeTokens("old").read_token(fresh)
    with pytest.raises(InvalidMessageError):
        rotated.read_token(UnsubscribeTokens("unknown").make_token("a@example.com", "w", "s1"))
    assert read_token(old_token, secret_key="new", previous_keys=["old"]).send_id == "s1"


def test_minted_tokens_are_what_itsdangerous_signs_and_verify_with_it() -> None:
    tokens = UnsubscribeTokens("current-key-" * 3, ["previous-key-" * 3])
    payload = {"r": "reader@example.com", "t": "new_post_notification", "s": "C.1", "l": "jane"}
    token = tokens.make_token("reader@example.com", "new_post_notification", "C.1", "jane")
    reference = URLSafeSerializer(
        ["previous-key-" * 3, "current-key-" * 3], salt="postroom-unsubscribe"
    )
    assert token == reference.dumps(payload)
    assert reference.loads(token) == payload
    unusual = tokens.make_token("josé@exámple.com", 'type"x', "s\\1", None)
    assert tokens.read_token(unusual).recipient == "josé@exámple.com"
    assert tokens.read_token(unusual).email_type == 'type"x'


@pytest.mark.parametrize(
    "payload",
    [
        {"r": "reader@example.com", "t": "new_post_notification", "s": "C.1", "l": "jane"},
        {"r": 'quote"d@example.com', "t": "back\\slash"},
        {"r": "josé@exámple.com", "t": "tab\there"},
        {"r": "all ~!#$%&'()*+,-./:;<=>?@[]^_`{|} printable", "t": "x"},
    ],
)
def test_token_payloads_are_compact_json_whatever_their_values(payload: dict[str, str]) -> None:
    import json

    from postroom.rendering.unsubscribe import _compact_json

    assert _compact_json(payload) == json.dumps(payload, separators=(",", ":")).encode()
