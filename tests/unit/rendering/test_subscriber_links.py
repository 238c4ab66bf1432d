"""The links marketing mail carries for its subscriber: the list in the unsubscribe token,
the preference centre's URL, and rotation of the signing key."""

from __future__ import annotations

import re
from collections.abc import Callable

from postroom.messages import EmailEvent
from postroom.rendering import Renderer, TemplateRegistry, UnsubscribeTokens

MakeEvent = Callable[..., EmailEvent]
MakeRenderer = Callable[..., Renderer]
CAMPAIGN = {"campaign_id": "c1", "list_id": "jane", "subscriber_id": "s-1"}
_TOKEN = re.compile(r"https://mail\.platform\.example/unsubscribe/([^\s\"<>]+)")


def test_campaign_mail_names_its_list_and_links_the_preference_centre(
    bundled: TemplateRegistry, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    renderer = make_renderer(bundled)
    out = renderer.render(make_event("new_post_notification", metadata=CAMPAIGN), send_id="c1.1")
    header_token = out.headers["List-Unsubscribe"][1:-1].rsplit("/", 1)[1]
    claim = renderer.tokens.read_token(header_token)
    assert (claim.list_id, claim.recipient, claim.send_id) == ("jane", "reader@example.com", "c1.1")
    reengagement = renderer.render(
        make_event("reengagement", dict(bundled.get("reengagement").sample)), send_id="r1"
    )
    assert f"https://mail.platform.example/preferences/{_token(reengagement.html)}" in (
        reengagement.html
    )


def test_mail_without_a_list_keeps_list_free_tokens(
    renderer: Renderer, make_event: MakeEvent
) -> None:
    for metadata in ({"user_id": "u-1"}, {"list_id": 5}, {"list_id": ""}):
        out = renderer.render(make_event("new_post_notification", metadata=metadata), send_id="s1")
        token = out.headers["List-Unsubscribe"][1:-1].rsplit("/", 1)[1]
        assert renderer.tokens.read_token(token).list_id is None


def test_preference_url_is_in_the_context_only_for_marketing_mail(
    write_type: Callable[..., object], make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    write_type(
        "promo", html="<p>{{ unsubscribe_url }} {{ preference_url }}</p>", toml="marketing = true\n"
    )
    root = write_type("note", html="<p>{{ preference_url is defined }}</p>")
    renderer = make_renderer(TemplateRegistry.load(root))  # type: ignore[arg-type]
    promo = renderer.render(make_event("promo", {"who": "A"}, metadata=CAMPAIGN), send_id="p1")
    token = _token(promo.html)
    assert f"https://mail.platform.example/preferences/{token}" in promo.html
    assert renderer.tokens.read_token(token).list_id == "jane"
    assert "False" in renderer.render(make_event("note", {"who": "A"}), send_id="n1").html


def test_links_signed_before_a_key_rotation_keep_working(
    bundled: TemplateRegistry, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    before = make_renderer(bundled, secret_key="old-key")
    out = before.render(make_event("new_post_notification", metadata=CAMPAIGN), send_id="c1.2")
    token = out.headers["List-Unsubscribe"][1:-1].rsplit("/", 1)[1]
    after = make_renderer(bundled, secret_key="new-key", previous_secret_keys=["old-key"])
    assert after.tokens.read_token(token).list_id == "jane"
    fresh = after.render(make_event("new_post_notification"), send_id="s9")
    fresh_token = fresh.headers["List-Unsubscribe"][1:-1].rsplit("/", 1)[1]
    assert UnsubscribeTokens("new-key").read_token(fresh_token).send_id == "s9"


def _token(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no unsubscribe link in the HTML"
    return match.group(1)
