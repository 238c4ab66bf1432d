"""Personalizing a batch cheaply when it holds copies of one mailing (SendGrid, Mailgun).

:func:`~postroom.providers.http_batching.personalize` searches every per-recipient value in
every part of a message (~70 µs for a newsletter). Copies of one mailing differ only in those
values, so once one copy is personalized the next is checked instead: the template's
placeholders filled in with the copy's own values must give the copy back exactly. The check
compares text in place (``startswith`` at offsets, no filled-in string is built), ~8 µs a
copy, and whatever it does not reproduce is personalized from scratch as before, so the
result is the same as personalizing each message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from postroom.messages import MailingCopy, RenderedEmail
from postroom.providers.http_batching import Personalized, alone, personalize, recipient_values

__all__ = ["personalize_all"]

_Pieces = tuple[list[str], list[str]]  # literal text around placeholders, the names they hold


def personalize_all(
    batch: Sequence[RenderedEmail], placeholder: Callable[[str], str], *, marker_prefix: str
) -> list[Personalized]:
    """``personalize`` for every message of ``batch``: the previous message's placeholders are
    tried first, and a copy they reproduce exactly shares its key. A message they do not
    reproduce is personalized from scratch and becomes the one tried next. A message alone in
    ``batch`` is sent as it is (a call of its own: placeholders would only cost time)."""
    if len(batch) == 1:
        return [alone(batch[0])]
    items: list[Personalized] = []
    last: _Copy | None = None
    layouts: dict[int, _Layout | None] = {}
    for email in batch:
        if email.copy is not None:
            copied = _from_layout(email, email.copy, layouts, placeholder, marker_prefix)
            if copied is not None:
                items.append(copied)
                continue
        item = None
        values = recipient_values(email)
        # NUL-joined so that no marker can be made of the end of one value and the next.
        if last is not None and marker_prefix not in "\x00".join(values.values()):
            item = last.match(email, values)
        if item is None:
            item = personalize(email, placeholder, marker_prefix=marker_prefix, values=values)
            if item.key[:1] != ("alone",):
                last = _Copy(item, placeholder)
        items.append(item)
    return items


_Layout = tuple[str, str, str, dict[str, str], tuple[object, ...]]


def _from_layout(
    email: RenderedEmail,
    copy: MailingCopy,
    layouts: dict[int, _Layout | None],
    placeholder: Callable[[str], str],
    marker_prefix: str,
) -> Personalized | None:
    """A copy of a mailing, personalized from the layout it was filled from (see
    :class:`~postroom.messages.MailingCopy`): no search, and exact. None when the layout or
    a value holds the ESP's marker syntax, which the ESP would substitute."""
    key = id(copy.mailing)
    if key not in layouts:
        subject, html, text, headers = copy.layout(placeholder)
        probe = {name: "" for name in copy.values}
        literal = copy.layout(lambda name: probe[name])
        unsafe = any(marker_prefix in part for part in (*literal[:3], *literal[3].values()))
        layouts[key] = None if unsafe else (
            subject, html, text, dict(headers),
            (email.sender, email.email_type, email.category, subject, html, text,
             tuple(sorted(headers.items())), key),
        )  # fmt: skip
    layout = layouts[key]
    if layout is None or any(marker_prefix in value for value in copy.values.values()):
        return None
    subject, html, text, headers, group = layout
    values = {**copy.values, "send_id": email.send_id, "message_id": email.message_id}
    return Personalized(email, subject, html, text, headers, values, group)


class _Copy:
    """A personalized message kept to recognise further copies of its mailing."""

    def __init__(self, item: Personalized, placeholder: Callable[[str], str]) -> None:
        self.item = item
        email = item.email
        self.envelope = (email.sender, email.email_type, email.category)
        self.header_names = list(item.headers)
        self._names = {placeholder(name): name for name in item.values}
        self._templates = [item.subject, item.html, item.text, *item.headers.values()]
        # Split on first use: a distinct message usually fails on the subject or the HTML.
        self._parts: list[_Pieces | None] = [None] * len(self._templates)

    def _split(self, index: int) -> _Pieces:
        pieces = self._parts[index] = _pieces(self._templates[index], self._names)
        return pieces

    def match(self, email: RenderedEmail, values: dict[str, str]) -> Personalized | None:
        item = self.item
        if (email.sender, email.email_type, email.category) != self.envelope:
            return None
        if values.keys() != item.values.keys() or email.headers.keys() != item.headers.keys():
            return None
        actual = [email.subject, email.html, email.text]
        actual += [email.headers[name] for name in self.header_names]
        parts = self._parts
        for index, wanted in enumerate(actual):
            literals, names = parts[index] or self._split(index)
            if not names:
                if literals[0] != wanted:
                    return None
            elif len(names) == 1:  # the usual case (an unsubscribe URL, a send id) inline
                head, tail = literals
                value = values[names[0]]
                if not (
                    len(wanted) == len(head) + len(value) + len(tail)
                    and wanted.startswith(head)
                    and wanted.endswith(tail)
                    and wanted.startswith(value, len(head))
                ):
                    return None
            elif not _fills(literals, names, values, wanted):
                return None
        return Personalized(
            email, item.subject, item.html, item.text, item.headers, values, item.key
        )


def _pieces(part: str, names: Mapping[str, str]) -> _Pieces:
    """``part`` as the literal text around its placeholders, and the names they stand for."""
    present = [marker for marker in names if marker in part]
    if not present:
        return [part], []
    pattern = re.compile("|".join(re.escape(marker) for marker in present))
    return pattern.split(part), [names[marker] for marker in pattern.findall(part)]


def _fills(literals: list[str], names: list[str], values: Mapping[str, str], wanted: str) -> bool:
    """Whether the placeholders replaced by ``values`` give exactly ``wanted``."""
    pos = 0
    for literal, name in zip(literals, names, strict=False):
        value = values[name]
        if not wanted.startswith(literal, pos):
            return False
        pos += len(literal)
        if not wanted.startswith(value, pos):
            return False
        pos += len(value)
    last = literals[-1]
    return pos + len(last) == len(wanted) and wanted.startswith(last, pos)
