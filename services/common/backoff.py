"""The one backoff every retry loop of dwsim uses: exponential, capped, with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays between attempts at something that keeps failing for a transient reason.

    Each failure doubles the delay, from `initial` up to `cap`; the delay handed out is drawn
    from its upper half ("equal jitter"), so the workers of a process — and the processes of a
    stack — that lost the database at the same instant do not all knock again at the same
    instant, while each still waits at least half its nominal delay. A success resets it.
    """

    def __init__(self, cap: float, initial: float = 0.1, rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial} and {cap}")
        self.initial = initial
        self.cap = cap
        self._nominal = initial
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt, after one more failure."""
        nominal = self._nominal
        self._nominal = min(nominal * 2, self.cap)
        self.failures += 1
        return nominal / 2 + self._rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        """After a success: the next failure waits `initial` again."""
        self._nominal = self.initial
        self.failures = 0
