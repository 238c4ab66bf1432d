"""The fakes refuse what the real APIs refuse, with the documented error bodies: checked with
raw HTTP requests, so an adapter test passing against a fake means something."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import orjson
from tests.esp_fakes.base import Fault
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.postmark import FakePostmark
from tests.esp_fakes.sendgrid import FakeSendGrid

MAIL = {
    "personalizations": [{"to": [{"email": "a@example.com"}]}],
    "from": {"email": "jane@news.example"},
    "subject": "Hello",
    "content": [{"type": "text/plain", "value": "Hi"}],
}


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        raw = await r.read()
        try:
            return r.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return r.status, raw.decode()


async def test_sendgrid_fake_follows_mail_send() -> None:
    async with FakeSendGrid() as fake:
        url, auth = f"{fake.base_url}/v3/mail/send", {"Authorization": f"Bearer {fake.credential}"}

        async def send(body: Any, headers: dict[str, str] = auth) -> tuple[int, Any]:
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            return await _post(url, raw, headers)

        status, body = await send(MAIL, {"Authorization": "Bearer SG.wrong"})
        assert status == 401 and body["errors"][0]["message"]
        assert (await send(b"{not json"))[0] == 400
        for missing in ("from", "content", "personalizations", "subject"):
            status, body = await send({k: v for k, v in MAIL.items() if k != missing})
            assert status == 400, missing
            assert set(body["errors"][0]) == {"message", "field", "help"}
        many = {
            **MAIL,
            "personalizations": [{"to": [{"email": f"r{i}@x.example"}]} for i in range(1001)],
        }
        assert (await send(many))[0] == 400
        twice = {**MAIL, "personalizations": [{"to": [{"email": "a@example.com"}]}] * 2}
        status, body = await send(twice)
        assert status == 400 and "duplicate" in body["errors"][0]["message"]
        html_first = {
            **MAIL,
            "content": [{"type": "text/html", "value": "<p>x</p>"}, MAIL["content"][0]],
        }
        assert (await send(html_first))[0] == 400
        reserved = {
            **MAIL,
            "personalizations": [
                {"to": [{"email": "a@example.com"}], "headers": {"Reply-To": "x"}}
            ],
        }
        assert (await send(reserved))[0] == 400
        assert fake.delivered == []
        assert (await send(MAIL))[0] == 202 and len(fake.delivered) == 1


async def test_mailgun_fake_follows_the_messages_api() -> None:
    async with FakeMailgun(domain="mg.example") as fake:
        url = f"{fake.base_url}/v3/mg.example/messages"
        good = base64.b64encode(f"api:{fake.credential}".encode()).decode()
        form = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {good}",
        }
        fields = "from=jane%40news.example&to=a%40example.com&subject=Hi&text=Hello"

        assert await _post(url, fields.encode(), {**form, "Authorization": "Basic eDp5"}) == (
            401,
            "Forbidden",
        )
        status, body = await _post(
            f"{fake.base_url}/v3/other.example/messages", fields.encode(), form
        )
        assert status == 404 and "Domain not found" in body["message"]
        status, body = await _post(url, fields.replace("from=", "frm=").encode(), form)
        assert (status, body) == (400, {"message": "from parameter is missing"})
        status, body = await _post(url, fields.replace("&text=Hello", "").encode(), form)
        assert status == 400 and "text" in body["message"]
        many = "&".join(f"to=r{i}%40x.example" for i in range(1001))
        assert (await _post(url, f"{fields}&{many}".encode(), form))[0] == 400
        bad_json = f"{fields}&recipient-variables=%7Bnope"
        assert (await _post(url, bad_json.encode(), form))[0] == 400
        status, body = await _post(url, fields.encode(), form)
        assert status == 200 and body["message"] == "Queued. Thank you."
        assert body["id"].startswith("<") and len(fake.delivered) == 1


async def test_postmark_fake_follows_the_email_api() -> None:
    async with FakePostmark() as fake:
        headers = {"X-Postmark-Server-Token": fake.credential, "Content-Type": "application/json"}
        message = {
            "From": "jane@news.example",
            "To": "a@example.com",
            "Subject": "Hi",
            "TextBody": "x",
        }

        status, body = await _post(f"{fake.base_url}/email", orjson.dumps(message), {})
        assert status == 401 and body["ErrorCode"] == 10
        status, body = await _post(f"{fake.base_url}/email", b"{nope", headers)
        assert status == 422 and body["ErrorCode"] == 402
        status, body = await _post(
            f"{fake.base_url}/email", orjson.dumps({**message, "TextBody": ""}), headers
        )
        assert status == 422 and body["ErrorCode"] == 300
        fifty_one = ", ".join(f"r{i}@x.example" for i in range(51))
        status, body = await _post(
            f"{fake.base_url}/email", orjson.dumps({**message, "To": fifty_one}), headers
        )
        assert status == 422 and body["ErrorCode"] == 300
        status, body = await _post(
            f"{fake.base_url}/email/batch", orjson.dumps([message] * 501), headers
        )
        assert status == 422 and body["ErrorCode"] == 410
        assert fake.delivered == []
        status, body = await _post(
            f"{fake.base_url}/email/batch", orjson.dumps([message] * 2), headers
        )
        assert status == 200 and [m["ErrorCode"] for m in body] == [0, 0]


async def test_the_fakes_count_a_request_that_ignores_a_retry_after() -> None:
    async with FakeSendGrid() as fake:
        url, auth = f"{fake.base_url}/v3/mail/send", {"Authorization": f"Bearer {fake.credential}"}
        fake.fail_next(Fault.answer(429, b"{}", Retry_After="5"))
        assert (await _post(url, orjson.dumps(MAIL), auth))[0] == 429
        assert (await _post(url, orjson.dumps(MAIL), auth))[0] == 202
        assert fake.retry_after_violations == 1
