"""The records passed between layers: bulk construction gives the very same objects."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.core.models import (
    BannedFinding,
    HostFacts,
    HostRecord,
    HostState,
    new_facts,
    new_record,
)


def test_bulk_constructors_make_equal_frozen_records() -> None:
    banned = (BannedFinding("kesl", "12.1", "2024-09-27", ("kesl",), ("kesl.service",), 2),)
    args = ("Debian", "Debian", "12", banned, False, False, {"/var/lib": 10}, True, "",
            1.7e9, False)
    facts = new_facts(*args)
    assert facts == HostFacts(*args)
    assert facts.free_mb == {"/var/lib": 10} and facts.banned == banned
    record_args = ("h1", HostState.PENDING, "why", None, 3, facts, 1.5, None, 2.0,
                   "kesl.service running", 1.0, "mde")
    record = new_record(*record_args)
    assert record == HostRecord(*record_args)
    assert hash(record) == hash(HostRecord(*record_args))
    assert record.gap_seconds is None and record.wave == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.state = HostState.MIGRATED  # type: ignore[misc]
    assert facts.with_free_mb({"/usr": 1}) == dataclasses.replace(facts, free_mb={"/usr": 1})
    with pytest.raises(TypeError):
        new_record(*record_args[:-1])  # every field, always
