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


def test_a_status_line_wider_than_the_terminal_is_cut_so_a_redraw_never_scrolls():
    """Review finding (issue 30): the recorder's line is 96-164 characters; on an 80-column SSH terminal it wrapped,
    and each redraw (\\r returns to the start of the last row only) scrolled the screen by a line."""
    import fcntl
    import os
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))  # a 40-column terminal
    terminal = os.fdopen(slave, "w")
    try:
        line = LiveLine(stream=terminal)
        assert line.columns() == 40
        text = "recording | episode 3 | 42 frames 10.0 Hz | cmd +0.50 +0.00 +0.00 | 12.3 GB free"
        line.show(text)
        line.show(text.replace("42", "43"))
        out = b""
        while out.count(b"\r") < 2 or not out.endswith(b"..."):  # a pty read returns what has arrived: one write or two
            ready, _, _ = select.select([master], [], [], 2.0)
            assert ready, f"the terminal received only {out!r}"
            out += os.read(master, 4096)
        drawn = out.decode().replace("\r\n", "\n").split("\r")
        assert [len(d) for d in drawn if d] == [39, 39] and drawn[-1].endswith("...")
        assert line.text == text.replace("42", "43")  # the whole text is kept: a wider terminal gets it all
    finally:
        terminal.close()
        os.close(master)
    assert LiveLine(stream=io.StringIO()).columns() is None  # a file or a pipe: nothing to cut
