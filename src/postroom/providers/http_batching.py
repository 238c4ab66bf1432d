"""Group rendered messages into ESP batch calls (SendGrid personalizations, Mailgun recipient
variables).

Those APIs take one content for the whole call and substitute per-recipient values into it.
Our messages arrive fully rendered, one per recipient, so a newsletter's copies differ only in
a few values: the unsubscribe URL, the send id, the address, the name. :func:`personalize`
replaces those values by placeholders; messages whose content is then identical share a call,
with each recipient's values given back as substitutions. The substitution is an exact inverse,
so every recipient receives byte for byte what was rendered for them. Messages whose content
differs in any other way (a sign-in link) go in calls of their own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from postroom.messages import RenderedEmail

__all__ = ["Personalized", "alone", "group_for_batch", "personalize"]

MAX_PRINTED_BYTES = 4_000
"""Printed values given as substitutions per message, at most: SendGrid caps one
personalization's substitutions at 10,000 bytes, and the recipient's own values need room."""
MIN_VALUE_LENGTH = 3
"""Shorter values (a two-letter name) are not replaced in the content: replacing every "Al"
would bloat the call for little gain. Their messages simply group less."""
_ANGLE_TARGETS = re.compile(r"<([^<>]+)>")
_SENTINEL = "\x00"  # never in a header-checked value; content holding it is not grouped


@dataclass(frozen=True, slots=True)
class Personalized:
    """One message with its per-recipient values replaced by placeholders."""

    email: RenderedEmail
    subject: str
    html: str
    text: str
    headers: Mapping[str, str]
    values: Mapping[str, str]  # placeholder variable name -> this recipient's value
    key: tuple[object, ...]  # equal keys can share one call


def alone(email: RenderedEmail) -> Personalized:
    """The message as it is, in a call of its own (ESPs without a substitution batch)."""
    return Personalized(
        email, email.subject, email.html, email.text, dict(email.headers),
        recipient_values(email), key=("alone", email.send_id),
    )  # fmt: skip


def recipient_values(email: RenderedEmail) -> dict[str, str]:
    """The values that legitimately differ between copies of one mailing: the recipient's,
    and what the templates printed (a sign-in link, an amount), so that transactional
    messages of one email type can share a call as a newsletter's copies do."""
    values = {
        "send_id": email.send_id,
        "message_id": email.message_id,
        "recipient": email.recipient,
        "name": email.recipient_name or "",
    }
    targets = _ANGLE_TARGETS.findall(email.headers.get("List-Unsubscribe", ""))
    for index, target in enumerate(targets):
        values[f"unsubscribe_{index}"] = target
        if target.startswith(("https://", "http://")):
            # The link's token also makes other links of the footer (the preference centre);
            # the whole URL is replaced first (longer), the token alone wherever else it is.
            values[f"unsubscribe_token_{index}"] = target.rstrip("/").rpartition("/")[2]
    room = MAX_PRINTED_BYTES
    for index, value in enumerate(email.printed):
        # Named by position: the nth value of two messages of one layout has one name.
        room -= len(value.encode())
        if room < 0:
            break  # the rest stay in the content: such messages simply group less
        unescaped = html.unescape(value)
        if unescaped != value:  # the text part and the subject hold it unescaped
            room -= len(unescaped.encode())
            if room < 0:
                break
            values[f"printed_{index}_text"] = unescaped
        values[f"printed_{index}"] = value
    return values


def personalize(
    email: RenderedEmail,
    placeholder: Callable[[str], str],
    *,
    marker_prefix: str,
    values: dict[str, str] | None = None,
) -> Personalized:
    """Replace this recipient's values by ``placeholder(name)`` in subject, bodies and headers.

    When the content already contains the ESP's marker syntax (or a value does), nothing is
    replaced and the key is unique to the message: it then travels in a call of its own.
    """
    if values is None:  # a caller that looked them up already passes them in
        values = recipient_values(email)
    parts = [email.subject, email.html, email.text, *email.headers.values()]
    unsafe = any(marker_prefix in part or _SENTINEL in part for part in parts) or any(
        marker_prefix in value for value in values.values()
    )
    if unsafe:
        return alone(email)
    # Longest first, so a value inside another (the send id inside the Message-ID) is replaced
    # as part of the longer one. Sentinels first and markers last, so no replacement can match
    # inside a marker inserted earlier.
    order = sorted(
        (name for name, value in values.items() if len(value) >= MIN_VALUE_LENGTH),
        key=lambda name: -len(values[name]),
    )
    table: list[tuple[str, str, str]] = []  # (value, sentinel, ESP placeholder)
    seen: set[str] = set()
    for index, name in enumerate(order):
        value = values[name]
        if value in seen:
            continue  # the same value under two names: the first name stands for it
        seen.add(value)
        table.append((value, f"{_SENTINEL}{index}{_SENTINEL}", placeholder(name)))

    def swap(part: str) -> str:
        used = []
        for value, sentinel, marker in table:
            if value in part:
                part = part.replace(value, sentinel)
                used.append((sentinel, marker))
        for sentinel, marker in used:
            part = part.replace(sentinel, marker)
        return part

    subject, html, text = swap(email.subject), swap(email.html), swap(email.text)
    headers = {name: swap(value) for name, value in email.headers.items()}
    key = (
        email.sender,
        email.email_type,
        email.category,
        subject,
        html,
        text,
        tuple(sorted(headers.items())),
    )
    return Personalized(email, subject, html, text, headers, values, key)


def group_for_batch(items: Iterable[Personalized], max_size: int) -> list[list[Personalized]]:
    """Calls of at most ``max_size`` messages with equal keys and distinct recipients.

    ESPs key per-recipient data by address (Mailgun) or reject an address twice in one call
    (SendGrid), so a second message to the same address goes in another call.
    """
    open_calls: dict[tuple[object, ...], list[list[Personalized]]] = {}
    calls: list[list[Personalized]] = []
    addresses: dict[int, set[str]] = {}
    for item in items:
        address = item.email.recipient.lower()
        candidates = open_calls.setdefault(item.key, [])
        for call in candidates:
            taken = addresses[id(call)]
            if len(call) < max_size and address not in taken:
                call.append(item)
                taken.add(address)
                break
        else:
            call = [item]
            candidates.append(call)
            calls.append(call)
            addresses[id(call)] = {address}
    return calls
