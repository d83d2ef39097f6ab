"""Events and a live status line on one terminal: an event never glues onto the status line, and the status line
comes back under it."""

import io
import logging

from runtime.logs import LiveLine, setup_logging


def test_an_event_starts_on_its_own_line_and_the_status_line_is_drawn_again_below_it():
    terminal = io.StringIO()
    setup_logging("info", stream=terminal)
    try:
        with LiveLine(stream=terminal) as line:
            line.show("recording | episode 3 | 42 frames")
            logging.getLogger("runtime.test").warning("joystick lost")
            line.show("recording | episode 3 | 43 frames")
        out = terminal.getvalue()
    finally:
        setup_logging("info")
    # what a terminal shows: \r returns to the line's start, the blanks erase the status before the event
    blank = "\r" + " " * len("recording | episode 3 | 42 frames") + "\r"
    assert out == ("\rrecording | episode 3 | 42 frames" + blank + "warning: joystick lost\n"
                   "\rrecording | episode 3 | 42 frames" + "\rrecording | episode 3 | 43 frames" + "\n")
    assert LiveLine._active is None  # ended: later events are written as they are


def test_an_event_on_another_stream_leaves_the_status_line_alone():
    terminal, journal = io.StringIO(), io.StringIO()
    setup_logging("info", stream=journal)
    try:
        line = LiveLine(stream=terminal)
        line.show("idle")
        logging.getLogger("runtime.test").info("saved episode_0000.h5")
        line.end()
    finally:
        setup_logging("info")
    assert terminal.getvalue() == "\ridle\n" and journal.getvalue() == "saved episode_0000.h5\n"
