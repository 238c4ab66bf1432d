"""Rate-limit reservations in Redis, shared by every worker on every host.

One Lua script does the GCRA step of :class:`postroom.worker.throttle.LocalReservations`
atomically on the server, with the server's clock, so that hosts whose clocks disagree still
share one schedule. A key expires once its reservations are in the past.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis

from postroom.errors import ConfigurationError
from postroom.worker.throttle import Rate

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local units = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + units * interval
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
return string.format('%.6f', wait)
"""


class RedisReservations:
    def __init__(self, url: str, *, prefix: str = "postroom:rate:") -> None:
        try:
            self._client: Any = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"POSTROOM_RATE_LIMIT_URL: {exc}") from exc
        self._prefix = prefix
        self._script = self._client.register_script(_RESERVE)

    async def reserve(self, key: str, units: float, rate: Rate) -> float:
        interval = 1.0 / rate.per_second
        wait = await self._script(
            keys=[self._prefix + key],
            args=[repr(interval), repr(units), repr(rate.burst * interval)],
        )
        return float(wait)

    async def close(self) -> None:
        await self._client.aclose()
