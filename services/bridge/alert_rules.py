"""Editing a map's alert rule: the administrator's use case behind `PUT /alert-rules/{id}`.

Shaped as Dataverse's confirmation: lock the row, build the new rule through the pure domain
(which refuses nonsense), write it through the repository and log the change in the map's
activity, all in one transaction, so a refused edit changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from services.bridge import error_repository, queries
from services.bridge import repository as repo
from services.bridge.domain import AlertAction, AlertRule, BridgeRuleError, ErrorType
from services.common.db import DbConnection


class DuplicateAlertRule(BridgeRuleError):
    """The edited rule would be the same as another rule of the map."""


async def edit_alert_rule(
    conn: DbConnection,
    rule_id: int,
    *,
    error_type: ErrorType,
    count: int,
    window: timedelta,
    action: AlertAction,
) -> dict[str, Any]:
    """Replace rule `rule_id`'s error type, count, window and action; return the stored rule.

    NotFound for an unknown id; BridgeRuleError (409) when the domain refuses the rule or it
    would duplicate another rule of the same map. The rule's last firing is kept: errors
    already counted by a firing do not fire the edited rule again.
    """
    async with conn.transaction():
        stored = await error_repository.lock_alert_rule(conn, rule_id)
        rule = AlertRule(stored.rule.map_name, error_type, count, window, action)
        if rule != stored.rule:
            try:
                await error_repository.update_alert_rule(conn, rule_id, rule)
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateAlertRule(
                    f"map '{rule.map_name}' has another rule with {_words(rule)} already"
                ) from exc
            await repo.add_activity(
                conn,
                rule.map_name,
                "alert_rule_changed",
                f"alert rule {rule_id}: {_words(stored.rule)} -> {_words(rule)}",
                detail={"rule_id": rule_id, "from": _words(stored.rule), "to": _words(rule)},
            )
        return await queries.alert_rule_view(conn, rule_id)


def _words(rule: AlertRule) -> str:
    return (
        f"{rule.count} {rule.error_type.value} errors in "
        f"{rule.window.total_seconds():g} s -> {rule.action.value}"
    )
