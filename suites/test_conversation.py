"""Conversations: with --vmtest-conversation, does every chat session read as it did?

Each test is one check (vmtest.checks.conversation): sessions map one to one, messages keep
their order, timestamps their instant, precision and time zone, sessions their expiry, and
with --vmtest-window the last N messages an application loads are the same.
"""

from __future__ import annotations

import pytest

from vmtest.checks.conversation import (
    Conversations,
    SessionPairs,
    both_sides,
    check_order,
    check_sessions,
    check_timestamps,
    check_ttls,
    check_window,
    pair_sessions,
    read_session_map,
    session_expiries,
)

pytestmark = [pytest.mark.vmtest_suite, pytest.mark.vmtest_needs("conversation")]


@pytest.fixture(scope="module")
def sides(vmtest_comparison, vmtest_settings) -> tuple[Conversations, Conversations]:
    """Both stores' messages by session (from the records the comparison read once); the
    source's fields as --vmtest-mapping maps them, when given."""
    s = vmtest_settings
    return both_sides(vmtest_comparison.source, vmtest_comparison.target,
                      session_field=s.session_field, order_field=s.order_field,
                      timestamp_field=s.timestamp_field, schema_map=s.schema_map)


@pytest.fixture(scope="module")
def session_map(vmtest_settings) -> dict[str, list[str]] | None:
    path = vmtest_settings.session_map
    return None if path is None else read_session_map(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pairs(sides, session_map) -> SessionPairs:
    return pair_sessions(*sides, session_map)[0]


def test_conversation_sessions(sides, session_map, vmtest_check, vmtest_settings):
    vmtest_check(check_sessions(*sides, session_map,
                                session_field=vmtest_settings.session_field))


def test_conversation_order(sides, pairs, vmtest_check):
    vmtest_check(check_order(*sides, pairs))


def test_conversation_timestamps(sides, vmtest_check, vmtest_settings):
    vmtest_check(check_timestamps(*sides, timestamp_field=vmtest_settings.timestamp_field))


def test_conversation_ttl(pairs, vmtest_comparison, vmtest_check, vmtest_settings):
    source, target = vmtest_comparison.source_store, vmtest_comparison.target_store
    vmtest_check(check_ttls(*session_expiries(source, target), pairs,
                            tolerance_s=vmtest_settings.ttl_tolerance,
                            target_engine=target.ENGINE))


@pytest.mark.vmtest_needs("window")
def test_conversation_window(sides, pairs, vmtest_check, vmtest_settings):
    vmtest_check(check_window(*sides, pairs, vmtest_settings.window))
