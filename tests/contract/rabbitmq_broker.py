"""The local RabbitMQ broker for tests: reachability, and a throw-away topology per test."""

from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aio_pika
from tests.conftest import require_service

from postroom.queue import rabbitmq_topology

RABBITMQ_URL = os.environ.get("POSTROOM_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")


@functools.cache
def rabbitmq_reachable() -> bool:
    parts = urlsplit(RABBITMQ_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


@asynccontextmanager
async def throwaway_prefix(
    tiers: Iterable[float] = rabbitmq_topology.DEFAULT_WAIT_TIERS,
) -> AsyncIterator[str]:
    """A unique name prefix; every queue and exchange under it (with wait queues of
    ``tiers``) is deleted afterwards."""
    require_service(rabbitmq_reachable(), f"RabbitMQ at {RABBITMQ_URL}")
    prefix = f"postroom-test-{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        topology = rabbitmq_topology.Topology.build(prefix, tiers, 1)
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            await rabbitmq_topology.delete(await connection.channel(), topology)
