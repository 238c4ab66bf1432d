"""Processes of the embedded default starting together migrate one at a time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from alembic.script import ScriptDirectory

from postroom.store.migrate import alembic_config, pending_revision

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

# Each process imports everything first, then waits for the go file, so that all of them
# reach the migration at the same moment.
MIGRATE = """
import os, sys, time
from postroom.store.migrate import upgrade
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
upgrade(sys.argv[1])
"""


def test_concurrent_first_migrations_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'postroom.db'}"
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", MIGRATE, url, str(go)]) for _ in range(6)]
    time.sleep(2)
    go.touch()
    assert [p.wait(timeout=120) for p in processes] == [0] * 6
    assert pending_revision(url) == (HEAD, HEAD)
