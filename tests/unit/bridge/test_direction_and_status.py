"""One-way enforcement and record sync statuses."""

from __future__ import annotations

import pytest

from services.bridge.domain import (
    BridgeRuleError,
    RecordStatus,
    SyncStatus,
)
from services.bridge.mapping import (
    Side,
    check_direction,
)
from services.bridge.table_maps import ACTUALS_MAP, PROPOSAL_MAP
from services.common.errors import DwsimError, OneWayViolation, RuleError
from services.finance.domain import FinanceRuleError


def test_proposal_header_from_dataverse_to_finance_is_allowed() -> None:
    check_direction(PROPOSAL_MAP, Side.DATAVERSE, Side.FINANCE)


def test_proposal_header_change_from_finance_is_a_one_way_violation() -> None:
    with pytest.raises(OneWayViolation) as info:
        check_direction(PROPOSAL_MAP, Side.FINANCE, Side.DATAVERSE)
    message = str(info.value)
    assert "Project invoice proposal V2 (invoices)" in message
    assert "finance to dataverse" in message
    assert "dataverse_to_finance" in message


def test_every_rule_error_has_one_root_and_one_way_violation_is_defined_once() -> None:
    # The APIs answer RuleError with 409: a one-way refusal in Finance's API and in the
    # bridge's is the same class, so both answer the same way.
    assert issubclass(OneWayViolation, RuleError)
    assert issubclass(BridgeRuleError, RuleError) and issubclass(FinanceRuleError, RuleError)
    assert issubclass(RuleError, DwsimError)


def test_actuals_map_carries_both_directions() -> None:
    check_direction(ACTUALS_MAP, Side.DATAVERSE, Side.FINANCE)
    check_direction(ACTUALS_MAP, Side.FINANCE, Side.DATAVERSE)


def test_same_side_is_never_carried() -> None:
    with pytest.raises(OneWayViolation):
        check_direction(ACTUALS_MAP, Side.FINANCE, Side.FINANCE)


def test_sync_status_values() -> None:
    assert [s.value for s in SyncStatus] == [
        "pending",
        "synced",
        "failed",
        "queued",
        "filtered",
        "not_synced",
    ]


def test_statuses_that_need_a_reason() -> None:
    assert RecordStatus.failed("target refused: no line property").reason is not None
    assert RecordStatus.filtered("skip sync").status is SyncStatus.FILTERED
    stopped = RecordStatus.not_synced_map_stopped()
    assert (stopped.status, stopped.reason) == (SyncStatus.NOT_SYNCED, "not synced (map stopped)")
    for status in (SyncStatus.FAILED, SyncStatus.FILTERED, SyncStatus.NOT_SYNCED):
        with pytest.raises(BridgeRuleError, match="needs a reason"):
            RecordStatus(status)


def test_statuses_without_reason() -> None:
    for status in (SyncStatus.PENDING, SyncStatus.SYNCED, SyncStatus.QUEUED):
        assert RecordStatus(status).reason is None
        with pytest.raises(BridgeRuleError, match="takes no reason"):
            RecordStatus(status, "why")
