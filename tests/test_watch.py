"""The runtime's watch hook: listeners hear round boundaries only, and leave in O(1)."""

from __future__ import annotations

from accord.aggregator.watch import Watchers


def test_listeners_are_called_when_the_epoch_changes_and_not_after_removal() -> None:
    watchers, heard = Watchers(), []
    first = watchers.add(lambda: heard.append("first"))
    watchers.add(lambda: heard.append("second"))
    watchers.moved_to((0, False))
    assert heard == ["first", "second"]
    watchers.moved_to((0, False))  # a result came, the round is the same: nobody is woken
    assert heard == ["first", "second"]
    watchers.remove(first)
    watchers.remove(first)  # twice is harmless (a long poll answered and cancelled)
    watchers.moved_to((1, False))
    assert heard == ["first", "second", "second"]
