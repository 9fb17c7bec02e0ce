"""A dead letter always fits the producer's limit: whole when it can, else the longest prefix."""

from __future__ import annotations

import hashlib

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.receipts import DeadLetter
from services.common.dead_letters import Headers, dead_letter, too_large_reason

LIMIT = 1024 * 1024


def on_the_wire(letter: DeadLetter, key: bytes | None) -> int:
    """The size aiokafka's producer compares with max_request_size (as send_dead_letter sends)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, letter.model_dump_json().encode(), [("reason", letter.reason.encode()[:1000])]
    )
    return size


def letter_of(value: bytes, key: bytes | None = b"inv-1", headers: Headers = ()) -> DeadLetter:
    return dead_letter(
        "p.invoice-confirmed", 3, 42, key, value, "bad", max_bytes=LIMIT, headers=headers
    )


def test_a_small_message_is_carried_whole_with_its_size_and_hash() -> None:
    value = b'{"not": "an envelope"'
    letter = letter_of(value, headers=[("event_type", b"invoice.confirmed")])
    assert letter.value == value.decode()
    assert not letter.truncated
    assert (letter.topic, letter.partition, letter.offset, letter.key) == (
        "p.invoice-confirmed",
        3,
        42,
        "inv-1",
    )
    assert letter.size == len(value)
    assert letter.sha256 == hashlib.sha256(value).hexdigest()
    assert letter.headers == [("event_type", "invoice.confirmed")]


# Plain text; characters JSON escapes (up to 6 bytes each); bytes that are not UTF-8 (3 bytes
# each once replaced): the prefix must fit whatever the value is made of.
@pytest.mark.parametrize("unit", [b"x", b'"\\\x00\x01', "é€😀".encode(), b"\xff\xfe"], ids=repr)
@pytest.mark.parametrize("size", [1_500_000, 6_000_000])
def test_an_oversize_message_keeps_the_longest_prefix_that_fits(unit: bytes, size: int) -> None:
    value = (unit * (size // len(unit) + 1))[:size]
    letter = letter_of(value)
    assert letter.truncated
    assert on_the_wire(letter, b"inv-1") <= LIMIT
    assert letter.size == size
    assert letter.sha256 == hashlib.sha256(value).hexdigest()
    decoded = value.decode(errors="replace")
    assert decoded.startswith(letter.value)
    # The longest: one character more would not fit.
    longer = letter.model_copy(update={"value": decoded[: len(letter.value) + 1]})
    assert on_the_wire(longer, b"inv-1") > LIMIT
    # And it is most of the limit, not a token prefix.
    assert on_the_wire(letter, b"inv-1") > LIMIT - 16


def test_a_huge_key_and_headers_are_cut_and_the_letter_says_so() -> None:
    key = b"k" * 5000
    letter = letter_of(b"{}", key=key, headers=[("trace", b"t" * 5000)] * 40)
    assert letter.truncated
    assert letter.key == "k" * 1024
    assert len(letter.headers) == 16
    assert all(len(v) == 1024 for _, v in letter.headers)
    assert letter.value == "{}"


def test_size_refusal_starts_above_the_limit() -> None:
    assert too_large_reason(b"x" * LIMIT, LIMIT) is None
    assert too_large_reason(None, LIMIT) is None
    reason = too_large_reason(b"x" * (LIMIT + 1), LIMIT)
    assert reason == (
        "message too large: 1048577 bytes, over the limit of 1048576 (max_message_bytes)"
    )
