"""The RabbitMQ layout as pure functions: wait tiers, names and arguments, URL options, the
headers of copies and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage

from postroom.errors import ConfigurationError
from postroom.messages import Priority
from postroom.queue import rabbitmq_topology as topo
from postroom.queue.rabbitmq import RabbitMqQueue, split_url


def topology(*tiers: float, max_deliveries: int = 10) -> topo.Topology:
    return topo.Topology.build("pr", tiers, max_deliveries)


def test_tiers_are_sorted_unique_whole_milliseconds() -> None:
    assert topology(30, 1, 0.25, 1.0, 0.2504, 0).tiers == (0.25, 1.0, 30.0)
    with pytest.raises(ValueError, match="wait tier"):
        topology(0, -1)


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0.1, 1.0), (1.0, 1.0), (1.001, 30.0), (29.9, 30.0), (30.0, 30.0), (31, 300.0), (1e6, 300.0)],
)
def test_a_delay_goes_to_the_smallest_tier_not_shorter(delay: float, tier: float) -> None:
    assert topology(1, 30, 300).tier_for(delay) == tier


def test_names_and_arguments() -> None:
    layout = topology(0.25, 60, max_deliveries=3)
    assert layout.work_queue(Priority.CRITICAL) == "pr.critical"
    assert layout.wait_queue(Priority.MARKETING, 0.25) == "pr.wait.marketing.250ms"
    assert layout.queues_of(Priority.TRANSACTIONAL) == [
        "pr.transactional",
        "pr.wait.transactional.250ms",
        "pr.wait.transactional.60s",
    ]
    work = layout.work_arguments()
    # The broker counts returns, Postroom counts hand-outs: 3 hand-outs are 2 returns.
    assert (work["x-queue-type"], work["x-delivery-limit"]) == ("quorum", 2)
    assert (work["x-dead-letter-exchange"], work["x-dead-letter-routing-key"]) == ("", "pr.dead")
    wait = layout.wait_arguments(Priority.MARKETING, 60)
    assert (wait["x-message-ttl"], wait["x-dead-letter-exchange"]) == (60_000, "pr.work")
    assert wait["x-dead-letter-routing-key"] == "marketing"


def test_url_options_are_ours_the_rest_goes_to_the_client() -> None:
    url, options = split_url("amqps://u:p@host:5671/vh?prefix=app&heartbeat=30&prefetch=64")
    assert url == "amqps://u:p@host:5671/vh?heartbeat=30"
    assert options == {"prefix": "app", "prefetch": "64"}
    queue = RabbitMqQueue.from_url("amqp://h/?prefix=app", extra_wait_tiers=[7])
    assert queue.topology.prefix == "app"
    assert 7.0 in queue.topology.tiers
    assert set(topo.DEFAULT_WAIT_TIERS) <= set(queue.topology.tiers)


@pytest.mark.parametrize(
    "url", ["amqp://h/?prefetch=0", "amqp://h/?prefetch=many", "sqs://?region=x", "http://h/"]
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RabbitMqQueue.from_url(url)


class Received:
    """The parts of an incoming message the topology functions read."""

    def __init__(self, body: bytes, headers: dict[str, Any], message_id: str | None = None):
        self.body = body
        self.headers = headers
        self.message_id = message_id
        self.content_type = "application/json"
        self.content_encoding = None
        self.timestamp = None


def incoming(body: bytes, headers: dict[str, Any], message_id: str | None = None) -> Any:
    message: AbstractIncomingMessage = Received(body, headers, message_id)  # type: ignore[assignment]
    return message


def test_a_message_without_an_id_gets_one_from_its_body() -> None:
    first = topo.message_id(incoming(b'{"a": 1}', {}))
    assert first.startswith("sha256-")
    assert first == topo.message_id(incoming(b'{"a": 1}', {}))
    assert first != topo.message_id(incoming(b'{"a": 2}', {}))
    assert topo.message_id(incoming(b"x", {}, "given")) == "given"


def test_a_copy_leaves_the_brokers_headers_behind() -> None:
    original = incoming(
        b"doc",
        {"x-death": [{}], "x-delivery-count": 3, "postroom-attempt": 1, "trace": "t1"},
        "m1",
    )
    copy = topo.copy_of(original, postroom_attempt=2, postroom_error="e" * 5000, trace=None)
    assert copy.message_id == "m1"
    assert copy.body == b"doc"
    assert copy.headers == {"postroom-attempt": 2, "postroom-error": "e" * 2000}
    assert copy.delivery_mode.value == 2  # persistent


def test_dead_letter_from_our_headers() -> None:
    letter = topo.dead_letter_of(
        incoming(
            b"doc",
            {
                "postroom-reason": "5.1.1 unknown user",
                "postroom-attempt": 2,
                "postroom-priority": "critical",
                "postroom-dead-at": 1_700_000_000_500,  # milliseconds
            },
            "m1",
        ),
        max_deliveries=10,
    )
    assert (letter.id, letter.priority, letter.reason, letter.attempt) == (
        "m1",
        Priority.CRITICAL,
        "5.1.1 unknown user",
        2,
    )
    assert letter.dead_at == datetime.fromtimestamp(1_700_000_000.5, UTC)


def test_dead_letter_from_the_brokers_delivery_limit() -> None:
    died = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    death = {"reason": "delivery_limit", "queue": "pr.marketing", "time": died}
    letter = topo.dead_letter_of(
        incoming(b"doc", {"x-death": [death | {"routing-keys": ["marketing"]}]}), 4
    )
    assert letter.priority is Priority.MARKETING
    assert letter.reason == "delivery limit reached: handed out 4 times without an outcome"
    assert (letter.attempt, letter.dead_at) == (0, died)
    other = topo.dead_letter_of(incoming(b"doc", {"x-death": [death | {"reason": "rejected"}]}), 4)
    assert other.reason == "dead-lettered by RabbitMQ (rejected) from pr.marketing"
    assert other.priority is Priority.TRANSACTIONAL  # nothing says which class
