"""Dead letters: what a consumer sends to `<topic>.dlq` for a message it cannot apply, built to
fit the producer's size limit. One implementation for the services' inbox loop and the bridge.

A message can be refused for three reasons: it is larger than `max_message_bytes` (no dwsim
producer sends one, and whatever a service made of it would itself be too large for the next
hop), it does not validate, or applying it keeps failing for a reason other than an outage.

A letter that would exceed the limit carries everything that identifies the original (topic,
partition, offset, key, headers, size, SHA-256) and as much of its value as fits, marked
truncated. We chose that over keeping the whole value in the service's database because:
- the `.dlq` stays self-contained for the people and tools that read it, who need no access
  to the database of a service they may not own;
- a database copy would let anyone able to write to a topic grow a service's database by
  megabytes per message, the very resource an oversize message attacks, and would need its
  own table, retention and API;
- the broker already holds the original under the topic's retention, and topic, partition and
  offset locate it exactly; the hash proves which bytes they were once it is gone.
The cost: after the original topic's retention, the bytes past the cut are lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.receipts import DeadLetter
from schemas.topics import dlq_name
from services.common.db import is_transient
from services.common.errors import DwsimError
from services.common.logging import get_logger

log = get_logger(__name__)

# What a letter keeps of the parts that are normally small, so that the value always has room:
# together at most ~40 KiB, well under the smallest `max_message_bytes` (64 KiB).
_MAX_REASON_CHARS = 2000
_MAX_KEY_BYTES = 1024
_MAX_HEADERS = 16
_MAX_HEADER_VALUE_BYTES = 1024
# The `reason` header lets a tool filter a `.dlq` without parsing the letters.
_MAX_REASON_HEADER_BYTES = 1000

Headers = Sequence[tuple[str, bytes | None]]


class DeadLetterTooLarge(DwsimError):
    """Even without its value a dead letter does not fit the size limit (a limit set too low)."""


def too_large_reason(value: bytes | None, max_bytes: int) -> str | None:
    """Why a consumed message is refused for its size, or None when it is within the limit."""
    size = len(value or b"")
    if size <= max_bytes:
        return None
    return f"message too large: {size} bytes, over the limit of {max_bytes} (max_message_bytes)"


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    *,
    max_bytes: int,
    headers: Headers = (),
) -> DeadLetter:
    """The `.dlq` letter of a message, at most `max_bytes` on the wire (as `send_dead_letter`
    sends it): the whole original value when it fits, else its longest prefix that does."""
    original = value or b""
    reason = reason[:_MAX_REASON_CHARS]
    kept_headers = [
        (name, (v or b"")[:_MAX_HEADER_VALUE_BYTES].decode(errors="replace"))
        for name, v in list(headers)[:_MAX_HEADERS]
    ]
    cut = (
        len(headers) > _MAX_HEADERS
        or any(len(v or b"") > _MAX_HEADER_VALUE_BYTES for _, v in headers)
        or (key is not None and len(key) > _MAX_KEY_BYTES)
    )
    wire_key = _wire_key(key)
    wire_headers = _wire_headers(reason)
    text = original.decode(errors="replace")
    digest = hashlib.sha256(original).hexdigest()

    def letter(kept: str, truncated: bool) -> DeadLetter:
        return DeadLetter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=wire_key.decode(errors="replace") if wire_key is not None else None,
            reason=reason,
            value=kept,
            headers=kept_headers,
            size=len(original),
            sha256=digest,
            truncated=truncated,
        )

    def fits(candidate: DeadLetter) -> bool:
        return _wire_size(wire_key, candidate, wire_headers) <= max_bytes

    whole = letter(text, cut)
    if fits(whole):
        return whole
    # The longest prefix that fits, by bisection: JSON escapes make a character 1 to 6 bytes,
    # so its length cannot be computed from the budget. Every character takes at least one
    # byte, so no prefix longer than the limit can fit.
    fitting, too_long = 0, min(len(text), max_bytes) + 1
    if not fits(letter("", True)):
        raise DeadLetterTooLarge(
            f"a dead letter of {topic} offset {offset} exceeds max_message_bytes={max_bytes} "
            "even without its value"
        )
    while too_long - fitting > 1:
        middle = (fitting + too_long) // 2
        if fits(letter(text[:middle], True)):
            fitting = middle
        else:
            too_long = middle
    return letter(text[:fitting], True)


async def send_dead_letter(
    producer: AIOKafkaProducer, letter: DeadLetter, key: bytes | None
) -> None:
    """Send a letter made by `dead_letter` to its topic's `.dlq`, keyed like the original
    (`key`: the original's key bytes, as given to `dead_letter`)."""
    await producer.send_and_wait(
        dlq_name(letter.topic),
        value=letter.model_dump_json().encode(),
        key=_wire_key(key),
        headers=_wire_headers(letter.reason),
    )
    log.warning(
        "event_dead_lettered",
        topic=letter.topic,
        partition=letter.partition,
        offset=letter.offset,
        size=letter.size,
        truncated=letter.truncated,
        reason=letter.reason,
    )


def is_outage(exc: BaseException) -> bool:
    """Whether a failure says that the database or the broker is away (retry the work later)
    rather than something about the messages (find the culprit and dead-letter it).

    TRANSIENT_DATABASE_ERRORS (the database away, or a lost race), and every broker error but
    a refusal of a message's size: a dead letter is the only thing a consumer sends, and it is
    made to fit.
    """
    if is_transient(exc):
        return True
    return isinstance(exc, KafkaError) and not isinstance(exc, MessageSizeTooLargeError)


def _wire_key(key: bytes | None) -> bytes | None:
    return key[:_MAX_KEY_BYTES] if key is not None else None


def _wire_headers(reason: str) -> list[tuple[str, bytes]]:
    return [("reason", reason.encode()[:_MAX_REASON_HEADER_BYTES])]


def _wire_size(key: bytes | None, letter: DeadLetter, headers: list[tuple[str, bytes]]) -> int:
    # The producer's own estimate, which is what it compares with max_request_size.
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, letter.model_dump_json().encode(), headers
    )
    return size
