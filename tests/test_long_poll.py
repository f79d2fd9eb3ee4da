"""The long poll's cost in the number of waiting sites: one look each when parked, one more
per wake (a round boundary), none for anything else; a poll past its deadline answers."""

from __future__ import annotations

import asyncio

from accord.transport.long_poll import LongPoll

PARKED = 1000


def test_a_thousand_parked_polls_look_once_each_per_wake_and_answer_after_it() -> None:
    async def scenario() -> tuple[list[str | None], int, int]:
        poll, looks, opened = LongPoll(), [0], [False]

        async def look(final: bool) -> str | None:
            looks[0] += 1
            return "run" if opened[0] else ("wait" if final else None)

        waiting = [asyncio.ensure_future(poll.wait(look, 600.0)) for _ in range(PARKED)]
        for _ in range(3):
            await asyncio.sleep(0)
        parked = looks[0]
        opened[0] = True
        poll.wake()
        answers = await asyncio.gather(*waiting)
        return answers, parked, looks[0]

    answers, parked, total = asyncio.run(scenario())
    assert parked == PARKED  # each looked once, then held nothing but a place in the event's waiters
    assert total == 2 * PARKED  # one wake: one more look each, and every poll answered
    assert answers == ["run"] * PARKED


def test_a_poll_looks_a_final_time_at_its_deadline_and_a_later_wake_finds_nobody() -> None:
    async def scenario() -> tuple[str, list[bool]]:
        poll, finals = LongPoll(), []

        async def look(final: bool) -> str | None:
            finals.append(final)
            return "wait" if final else None

        answer = await poll.wait(look, 0.05)
        poll.wake()  # no poller left: nothing looks again
        await asyncio.sleep(0)
        return answer, finals

    answer, finals = asyncio.run(scenario())
    assert answer == "wait"
    assert finals == [False, True]
