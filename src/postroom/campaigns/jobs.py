"""The chunk job: the queue message that stands for up to 1,000 recipients of a campaign.

It travels on the marketing queue beside ordinary email events, so it is told apart by its
one key. It names the chunk and nothing else: who is in it and what they get live in the
database, so a redelivered or duplicated job can only send what is still open.
"""

from __future__ import annotations

import orjson

from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.store.campaign_records import ChunkJob

_KEY = b'{"campaign_chunk":'


def is_chunk_job(body: bytes) -> bool:
    return body.startswith(_KEY)


def chunk_message(job: ChunkJob) -> OutgoingMessage:
    body = orjson.dumps({"campaign_chunk": {"campaign_id": job.campaign_id, "chunk": job.chunk}})
    return OutgoingMessage(id=job.job_id, priority=Priority.MARKETING, body=body)


def read_chunk_job(body: bytes) -> ChunkJob | None:
    """The job in ``body``, or None when it is malformed (the caller dead-letters it)."""
    try:
        document = orjson.loads(body)["campaign_chunk"]
        campaign_id, chunk = document["campaign_id"], document["chunk"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(campaign_id, str) or len(campaign_id) != 26:
        return None
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
        return None
    return ChunkJob(campaign_id, chunk)
