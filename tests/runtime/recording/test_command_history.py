"""The label a recorded frame gets: the command in force at its capture, or the move that followed it."""

from runtime.hardware import SentCommand
from runtime.recording.command_history import CommandHistory


def test_a_frame_is_labelled_with_what_went_out_not_with_what_was_asked():
    history = CommandHistory()
    history.add(1.0, SentCommand((0.2, 0.0, 0.0), sent=True, acknowledged=True))
    history.add(2.0, SentCommand((0.0, 0.0, 0.0), sent=False), person=True)  # the port was gone: nothing moved
    history.add(3.0, SentCommand((0.0, 0.3, 0.0), sent=True), person=True)
    assert history.in_force(0.5) == ((0.0, 0.0, 0.0), False)  # before the first command
    assert history.in_force(1.5) == ((0.2, 0.0, 0.0), False)
    assert history.in_force(2.5) == ((0.0, 0.0, 0.0), True)
    assert history.in_force(3.0) == ((0.0, 0.3, 0.0), True)


def test_a_step_frame_is_labelled_with_the_move_that_followed_it_and_who_drove_any_of_it():
    history = CommandHistory()
    for t, v, person in ((1.0, (0.2, 0.0, 0.0), False), (1.2, (0.25, 0.0, 0.0), True), (1.4, (0.0, 0.0, 0.0), False)):
        history.add(t, SentCommand(v, sent=True), person)
    assert history.move_between(0.9, 1.5) == ((0.25, 0.0, 0.0), True)  # its last non-zero command
    assert history.move_between(1.3, 2.0) == ((0.0, 0.0, 0.0), False)  # stood still
    assert history.move_between(1.0, 1.1) == ((0.0, 0.0, 0.0), False)  # the start is not in the move
