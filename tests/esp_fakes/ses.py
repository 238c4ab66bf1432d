"""SES for the tests: moto in server mode for the happy path, and a small fake of the SES v2
``SendEmail`` endpoint for the error answers moto cannot give (throttling, 5xx, suspended
account …), in the rest-json shape botocore parses (``X-Amzn-ErrorType`` header plus a JSON
``message``), with the same scriptable faults as the other fakes."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
from aiohttp import web
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from tests.esp_fakes.base import Delivered, FakeEsp

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MotoSes:
    endpoint_url: str

    def sent_raw(self) -> list[Any]:
        """moto's record of every raw message SES accepted (same process, server thread)."""
        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


@contextlib.contextmanager
def moto_ses(*verified: str) -> Iterator[MotoSes]:
    """A moto server on a free loopback port with ``verified`` sender addresses."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # moto keeps its backends per process: start each test from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
        ses = boto3.client("ses", region_name=REGION, endpoint_url=url, **CREDENTIALS)
        for address in verified:
            ses.verify_email_identity(EmailAddress=address)
        yield MotoSes(url)
    finally:
        server.stop()


class FakeSesErrors(FakeEsp):
    """``POST /v2/email/outbound-emails`` answering the scripted errors in ``errors``, then
    success (``{"MessageId": ...}``) once they are used up; accepted recipients are recorded
    in ``delivered`` (address and tags: the raw MIME is not parsed)."""

    def __init__(self) -> None:
        super().__init__("unchecked")  # SigV4 is botocore's business, not under test here
        self.errors: list[tuple[int, str, str, dict[str, str]]] = []

    def fail_with(self, status: int, code: str, message: str, **headers: str) -> None:
        self.errors.append((status, code, message, headers))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/email/outbound-emails", self.send_email)

    async def send_email(self, request: web.Request) -> web.StreamResponse:
        fault = await self.fault_for(request)
        if fault is not None:
            return fault
        body = orjson.loads(await request.read())
        if self.errors:
            status, code, message, headers = self.errors.pop(0)
            return web.json_response(
                {"message": message},
                status=status,
                headers={"X-Amzn-ErrorType": f"{code}:http://internal.amazon.com/", **headers},
            )
        message_id = str(uuid.uuid4())
        self.calls.append(body)
        self.delivered += [
            Delivered(
                to=address,
                to_name=None,
                sender=str(body.get("FromEmailAddress", "")),
                subject="",
                text=None,
                html=None,
                headers={},
                ids={tag["Name"]: tag["Value"] for tag in body.get("EmailTags", [])},
                provider_id=message_id,
            )
            for address in body.get("Destination", {}).get("ToAddresses", [])
        ]
        return web.json_response({"MessageId": message_id})
