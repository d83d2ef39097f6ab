"""The drive loop's view of the motor link and of its own health, piece by piece (the loop tests drive them
end to end: tests/runtime/control/test_loop_faults.py)."""

import logging

import pytest

from runtime.control.link_watch import LinkWatch, MotorLinkLost
from runtime.control.loop_health import LoopHealth, command_state, zero_state
from runtime.hardware import SentCommand

SENT = SentCommand((0.1, 0.0, 0.0), sent=True, acknowledged=True)
LOST = SentCommand((0.1, 0.0, 0.0), sent=False)


class Motor:
    name = "serial"

    def __init__(self):
        self.reconnects = 0
        self.missed_acks = 0
        self.refused = 0


def test_a_link_goes_down_comes_back_and_a_reconnect_starts_the_plan_over(caplog):
    motor = Motor()
    watch = LinkWatch(motor, give_up_after=5.0, auto_resume=False)
    caplog.set_level(logging.WARNING)
    assert watch.observe(SENT, 0.0) is None and watch.up and not watch.reconnected()
    assert watch.observe(LOST, 1.0) == "down" and not watch.up
    assert watch.observe(LOST, 2.0) is None  # still down: one event per outage
    motor.reconnects = 1
    assert watch.observe(SENT, 3.0) == "up" and watch.up
    assert watch.reconnected() and not watch.reconnected()  # once per reconnect
    assert "down: nothing reaches the robot" in caplog.text and "back after 2.0 s" in caplog.text


def test_a_controller_that_answers_nothing_is_a_link_down_and_counts_toward_give_up(caplog):
    """Issue 29 finding 4: a board deaf for longer than --give-up-after was never given up on, because only
    commands that were not sent counted. Unanswered ones count now; a refusal is an answer."""
    motor = Motor()
    watch = LinkWatch(motor, give_up_after=0.5, auto_resume=False)
    silent = SentCommand((0.1, 0.0, 0.0), sent=True, acknowledged=False)
    assert watch.observe(silent, 0.0) is None and watch.observe(silent, 0.05) is None and watch.up  # a missed ack
    assert watch.observe(silent, 0.1) == "down" and not watch.up
    assert "answered none of the last 3 commands" in caplog.text
    watch.observe(silent, 0.6)
    with pytest.raises(MotorLinkLost, match=r"down for 0\.7 s"):
        watch.observe(silent, 0.8)
    refusing = LinkWatch(motor, give_up_after=0.5, auto_resume=False)
    for i in range(10):  # NACKs: a controller that answers (and stops), not a silent one
        motor.refused += 1
        assert refusing.observe(SentCommand((0.0, 0.0, 0.0), sent=True, acknowledged=False), i * 0.1) is None
    assert refusing.up


def test_a_link_down_past_give_up_after_ends_the_run_unless_auto_resume():
    watch = LinkWatch(Motor(), give_up_after=0.5, auto_resume=False)
    watch.observe(LOST, 10.0)
    watch.observe(LOST, 10.5)  # exactly the limit: not yet
    with pytest.raises(MotorLinkLost, match=r"down for 0\.6 s \(--give-up-after 0\.5\).*--auto-resume"):
        watch.observe(LOST, 10.6)
    patient = LinkWatch(Motor(), give_up_after=0.5, auto_resume=True)
    patient.observe(LOST, 0.0)
    assert patient.observe(LOST, 3600.0) is None and not patient.up


def test_a_reconnect_while_still_down_is_seen():
    motor = Motor()
    watch = LinkWatch(motor, give_up_after=5.0, auto_resume=False)
    motor.reconnects = 2
    assert watch.observe(LOST, 0.0) == "down" and not watch.up and watch.reconnected()


def test_health_counts_zero_events_once_per_reason_and_shows_the_link_counters(caplog):
    motor = Motor()
    health = LoopHealth(motor)
    caplog.set_level(logging.INFO)
    assert health.zeroed(0.0, "camera: stalled", was_moving=True)
    assert not health.zeroed(0.1, "camera: stalled", was_moving=False)  # the same standstill
    assert health.zeroed(0.2, "command timeout", was_moving=False)
    motor.missed_acks, health.resets = 3, 1
    health.set_state(zero_state("command timeout", SENT))
    assert health.state == "zero: inference stalled" and health.level() == "warn"
    assert health.counters() == {"missed acks": 3, "refused": 0, "reconnects": 0, "zeros": 2, "resets": 1}
    assert "state: zero: inference stalled (missed acks 3, refused 0, reconnects 0, zeros 2, resets 1)" in caplog.text
    health.set_state(command_state(LOST, refused=False, lateral_refused=False))
    assert health.state == "link down" and health.level() == "error"
    health.set_state(command_state(SENT, refused=False, lateral_refused=False))
    assert health.state == "driving" and health.level() == "ok"
    assert health.diagnostics_due(5.0) and not health.diagnostics_due(5.5) and health.diagnostics_due(6.0)
