"""Several instances of a service: the setting, the instances' names and where each is found."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.common.settings import Settings, parse_instances
from services.simulator.processes import (
    instance_name,
    instances_of,
    live_instances,
    log_path,
    serving_instance,
    split_instance,
)
from services.simulator.stack import instance_names, known_instances


def test_instances_are_read_as_service_counts() -> None:
    assert parse_instances("bridge=2, finance=3") == {"bridge": 2, "finance": 3}
    assert parse_instances("") == {}
    counts = Settings(instances="bridge=2").instance_counts()
    assert counts == {"dataverse": 1, "finance": 1, "bridge": 2}


@pytest.mark.parametrize(
    ("text", "named"),
    [("crm=2", "'crm' is no service"), ("bridge=0", "at least one"), ("bridge=two", "bridge=two")],
)
def test_a_wrong_instances_setting_is_refused_naming_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings(instances=text)


def test_the_first_instance_is_named_as_its_service() -> None:
    assert instance_name("bridge", 1) == "bridge"
    assert instance_name("bridge", 2) == "bridge-2"
    assert split_instance("bridge-2") == ("bridge", 2)
    assert split_instance("finance") == ("finance", 1)
    assert split_instance("console") == ("console", 1)


def test_up_starts_first_instances_before_the_extra_ones(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, instances="bridge=2,dataverse=2")
    assert instance_names(settings) == ("dataverse", "finance", "bridge", "dataverse-2", "bridge-2")


def _record(home: Path, name: str, pid: int, port: int) -> None:
    """What a running instance writes once it listens."""
    service, n = split_instance(name)
    folder = home if n == 1 else home / "instances" / name
    (folder / "services").mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    (folder / "services" / f"{service}.json").write_text(
        json.dumps({"pid": pid, "port": port, "url": url})
    )


def test_clients_use_the_first_live_instance_and_status_lists_every_one(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    dead = 2**22 + 12345  # above Linux's default pid_max: no process has it
    _record(tmp_path, "finance", dead, 1001)
    _record(tmp_path, "finance-2", os.getpid(), 1002)
    _record(tmp_path, "finance-3", os.getpid(), 1003)
    assert instances_of(settings, "finance") == ["finance", "finance-2", "finance-3"]
    assert [s.name for s in live_instances(settings, "finance")] == ["finance-2", "finance-3"]
    assert serving_instance(settings, "finance").url == "http://127.0.0.1:1002"
    assert serving_instance(settings, "finance-3").url == "http://127.0.0.1:1003"
    listed = known_instances(settings)
    assert listed == ("dataverse", "finance", "finance-2", "finance-3", "bridge")
    assert log_path(settings, "finance-2") == tmp_path / "logs" / "finance-2.log"
