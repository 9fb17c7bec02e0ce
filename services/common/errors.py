"""dwsim's error tree, rooted in `DwsimError`, each class named for what went wrong.

Every service's rule errors derive from `RuleError` (the API answers 409 with the message),
every "no such record" from `NotFound` (404). A service adds its own subclasses beside its
domain; what two services share is defined here, once.
"""

from __future__ import annotations


class DwsimError(Exception):
    """Base of dwsim's own errors."""


class RuleError(DwsimError):
    """A business rule refused the operation; nothing changed. The message names the rule and
    the record, so an API shows it as is (HTTP 409)."""


class NotFound(DwsimError, LookupError):
    """A record the caller named does not exist (HTTP 404)."""


class OneWayViolation(RuleError):
    """A write in a direction its table map does not carry: a proposal header is created,
    deleted and keyed only by Dataverse, and never travels back (domain rules 1 and 2)."""


class ConsumerNotReady(DwsimError):
    """The consumer holds no partitions, or its group refuses its commits, for longer than a
    request waits: right after the broker came back it has not rejoined yet (HTTP 503)."""


class MigrationFailed(DwsimError):
    """A migration file could not be applied; nothing of it remains."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"migration {path} failed: {cause}")
        self.path = path
