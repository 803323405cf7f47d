"""The close state alone: which code stands, and what each event asks of the connection."""

from __future__ import annotations

from trio_wsroutes import CloseCode
from trio_wsroutes._engine.closing import NO_STEPS, CloseEvent, CloseState, CloseSteps


def test_a_close_queues_its_frame_after_what_is_queued_and_starts_the_deadline() -> None:
    state = CloseState()
    assert not state.closing
    steps = state.advance(CloseEvent.CLOSE, 1000, "bye")
    assert steps == CloseSteps(started=True, queue_close=(1000, "bye"))
    assert (state.closing, state.code, state.reason) == (True, 1000, "bye")


def test_the_first_close_wins_and_a_second_one_does_nothing() -> None:
    state = CloseState()
    state.advance(CloseEvent.CLOSE, 1000, "bye")
    assert state.advance(CloseEvent.CLOSE, 1011, "crash") is NO_STEPS
    assert (state.code, state.reason) == (1000, "bye")


def test_an_urgent_close_drops_what_is_queued_and_interrupts_the_send() -> None:
    state = CloseState()
    steps = state.advance(CloseEvent.CLOSE_NOW, 1013, "slow consumer")
    assert steps == CloseSteps(
        started=True, queue_close=(1013, "slow consumer"), drop_queued=True, cancel_send=True
    )


def test_an_urgent_close_after_a_close_hurries_it_with_the_first_code() -> None:
    state = CloseState()
    state.advance(CloseEvent.CLOSE, 1000, "bye")
    steps = state.advance(CloseEvent.CLOSE_NOW, 1001, "server shutdown")
    assert steps.queue_close == (1000, "bye")
    assert steps.drop_queued and steps.cancel_send and not steps.started


def test_once_the_frame_is_taken_an_urgent_close_changes_nothing() -> None:
    state = CloseState()
    state.advance(CloseEvent.CLOSE, 1000, "bye")
    state.advance(CloseEvent.FRAME_TAKEN)
    assert state.advance(CloseEvent.CLOSE_NOW, 1001, "server shutdown") is NO_STEPS


def test_a_peer_that_left_ends_the_tasks_without_a_frame() -> None:
    state = CloseState()
    steps = state.advance(CloseEvent.PEER_GONE, 1006, "")
    assert steps == CloseSteps(cancel_tasks=True)
    assert state.code == 1006
    # Already closing: the code stays, the tasks end anyway.
    closing = CloseState()
    closing.advance(CloseEvent.CLOSE, 1000, "")
    assert closing.advance(CloseEvent.PEER_GONE, 1006, "").cancel_tasks
    assert closing.code == 1000


def test_cancelled_from_outside_says_goodbye_only_if_nothing_was_said() -> None:
    state = CloseState()
    assert state.advance(CloseEvent.CANCELLED, 1001, "server shutdown").send_goodbye
    assert state.code == 1001
    closing = CloseState()
    closing.advance(CloseEvent.CLOSE, 1000, "")
    assert not closing.advance(CloseEvent.CANCELLED, 1001, "server shutdown").send_goodbye


def test_a_connection_that_ended_without_a_close_ended_abnormally() -> None:
    state = CloseState()
    state.advance(CloseEvent.ENDED)
    assert state.code == CloseCode.ABNORMAL
    kept = CloseState()
    kept.advance(CloseEvent.CLOSE, 1000, "bye")
    kept.advance(CloseEvent.ENDED)
    assert kept.code == 1000
