"""A moto server (SQS and other AWS APIs on loopback) for tests, started once per test session.

``moto_endpoint()`` starts it on a free port at first use and gives its URL; its thread is a
daemon, so it ends with the test run. Every test keeps to queues of its own (a unique name
prefix) and deletes them, so tests never see each other's.
"""

from __future__ import annotations

import functools
import logging
import os
import socket

from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

# moto checks no credentials, but botocore wants some; real ones must never reach a test.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@functools.cache
def _server() -> tuple[ThreadedMotoServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def moto_endpoint() -> str:
    """The running moto server's URL (started now if need be), with fake AWS credentials set."""
    os.environ.update(FAKE_CREDENTIALS)
    return _server()[1]


async def delete_sqs_queues(endpoint: str, prefix: str) -> None:
    """Delete every SQS queue whose name starts with ``prefix``."""
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint
    ) as sqs:
        listed = await sqs.list_queues(QueueNamePrefix=prefix)
        for url in listed.get("QueueUrls", []):
            await sqs.delete_queue(QueueUrl=url)
