"""Fake ESP servers for the tests: aiohttp.web apps on 127.0.0.1 that follow each ESP's
published API (path, auth, body checks, batch limits, documented error bodies) and record
every message they accept, with scriptable faults (429, 5xx, dropped connection, hang)."""
