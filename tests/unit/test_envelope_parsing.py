"""Parsing an event keeps nothing of it alive once the event is gone.

pydantic's JSON parser can cache the strings it parses (up to 16,384 per process). Events carry
mostly ids seen once, so a consumer caching them grew by about a string per record until the
cache was full: a slow rise in every service's memory that the bench's rounds read as growth.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from uuid import uuid4

from pydantic import BaseModel

from schemas.envelope import envelope_of


class _Ids(BaseModel):
    ids: list[str]


def test_parsing_distinct_ids_retains_no_memory() -> None:
    model = envelope_of(_Ids)
    events = [
        json.dumps(
            {
                "event_type": "t",
                "source": "s",
                "payload": {"ids": [uuid4().hex[:20] for _ in range(100)]},
            }
        ).encode()
        for _ in range(100)
    ]
    model.model_validate_json(events[0])  # the validator's own first-use allocations
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            model.model_validate_json(event)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 10,000 distinct 20-character ids: cached, they would hold about 700 KB.
    assert retained < 50_000, f"{retained} bytes kept after parsing 10,000 distinct ids"
