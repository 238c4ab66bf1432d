"""Request bodies over the limit get a 413, whether declared or streamed in chunks."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from postroom.api.app import BodyLimit


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyLimit, limit=100)
    return app


def test_a_body_within_the_limit_passes() -> None:
    with TestClient(echo_app()) as client:
        response = client.post("/echo", content=b"x" * 100)
    assert response.status_code == 200 and response.json() == {"bytes": 100}


def test_a_declared_oversized_body_is_refused() -> None:
    with TestClient(echo_app()) as client:
        response = client.post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json()["detail"][0]["reason"] == "request body over 100 bytes"


def test_a_chunked_oversized_body_is_refused_as_it_streams() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 30

    with TestClient(echo_app()) as client:
        response = client.post("/echo", content=chunks())
    assert response.status_code == 413
