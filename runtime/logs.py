"""Logging for every command: events go through `logging` with levels; the status line stays a terminal line.

    from runtime.logs import add_log_level_argument, setup_logging
    ap = argparse.ArgumentParser(); add_log_level_argument(ap)
    args = ap.parse_args(); setup_logging(args.log_level)
    log = logging.getLogger(__name__); log.info("driving with %s", backend)

    python -m runtime.drive ... --log-level debug      # every command takes --log-level

On a terminal each event is one line on stderr (the message; `warning: ...`
or `error: ...` above info). Under
systemd (JOURNAL_STREAM is set) the line carries the syslog priority prefix
(`<3>` for an error) that journald reads, so `journalctl -p warning` filters
the robot's events; journald adds the time itself. The live status line of
`runtime.drive` is not an event: it is written to the terminal only.

A status line redrawn in place (`LiveLine`, `runtime.record`'s) and events on
the same terminal: while a LiveLine is shown, each event first blanks it and
starts at column 0, and the line is drawn again under it, so an event never
glues onto the status line and the status line never overwrites an event.

    with LiveLine() as line:          # stderr
        line.show("recording | episode 3 | 42 frames")   # redrawn in place
        log.warning("...")            # on its own line; the status line comes back below it
"""

from __future__ import annotations

import logging
import os
import sys
import threading

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
# journald's priorities (sd-daemon(3)): the prefix journald strips and files the line under
_JOURNAL_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _TerminalFormatter(logging.Formatter):
    """A person's terminal: info as the message alone, others as `warning: ...` / `error: ...` (as CLI tools
    write them), debug with the module's name."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno == logging.INFO:
            return message
        if record.levelno == logging.DEBUG:
            return f"debug {record.name}: {message}"
        return f"{record.levelname.lower()}: {message}"


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_JOURNAL_PRIORITY.get(record.levelno, 6)}>{record.name}: {record.getMessage()}"


def add_log_level_argument(parser) -> None:
    parser.add_argument("--log-level", default=DEFAULT_LEVEL, choices=LEVELS,
                        help=f"events shown on stderr / in the journal (default {DEFAULT_LEVEL})")


def under_journal() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


class LiveLine:
    """One line redrawn in place on a terminal (a status line), which the events of `setup_logging` step around."""

    _active: LiveLine | None = None  # the line shown now; the log handler clears and redraws it around an event
    _lock = threading.RLock()  # one writer at a time: the line's owner and any thread that logs

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self.text = ""
        self._width = 0

    def _out(self):
        return self.stream or sys.stderr

    def columns(self) -> int | None:
        """The terminal's width, None when the stream is no terminal (a file, a pipe: nothing wraps there)."""
        try:
            return os.get_terminal_size(self._out().fileno()).columns
        except (AttributeError, ValueError, OSError):
            return None

    def show(self, text: str) -> None:
        """Draw `text` in place, cut to the terminal's width: a line that wraps cannot be redrawn with a carriage
        return, and every redraw would scroll the screen by a line (an 80-column SSH terminal, 5 redraws a second)."""
        if not self.enabled:
            return
        with LiveLine._lock:
            self.text = text
            width = self.columns()
            if width and len(text) > width - 1:  # the last column left free: some terminals wrap on it
                text = text[: max(width - 4, 0)] + "..."
            self._out().write("\r" + text + " " * max(0, self._width - len(text)))  # no tail of a longer line
            self._out().flush()
            self._width = len(text)
            LiveLine._active = self

    def clear(self) -> None:
        """Blank the line and return to its start (an event is written there next)."""
        with LiveLine._lock:
            if self._width:
                self._out().write("\r" + " " * self._width + "\r")
                self._out().flush()
                self._width = 0

    def redraw(self) -> None:
        if self.text:
            self.show(self.text)

    def end(self) -> None:
        """Leave the last state on the screen and move below it."""
        with LiveLine._lock:
            if self._width:
                self._out().write("\n")
                self._out().flush()
            self._width = 0
            self.text = ""
            if LiveLine._active is self:
                LiveLine._active = None

    def __enter__(self) -> LiveLine:
        return self

    def __exit__(self, *exc) -> None:
        self.end()


class _LineAwareHandler(logging.StreamHandler):
    """Events step around a LiveLine on the same terminal: blank it, write the event, draw it again."""

    def emit(self, record: logging.LogRecord) -> None:
        line = LiveLine._active
        if line is None or not self._same_terminal(line):
            super().emit(record)
            return
        with LiveLine._lock:
            line.clear()
            super().emit(record)
            line.redraw()

    def _same_terminal(self, line: LiveLine) -> bool:
        return line._out() is self.stream


class _StderrHandler(_LineAwareHandler):
    """Writes to whatever sys.stderr is when the event happens (a test harness or the pipeline may have swapped
    it since setup), so no event goes to a stream that was closed in between."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str = DEFAULT_LEVEL, stream=None) -> None:
    """Send the project's events to stderr (or `stream`) at `level`; called once by each command's main."""
    if level not in LEVELS:
        raise ValueError(f"--log-level: expected one of {', '.join(LEVELS)}, found {level!r}")
    handler = _LineAwareHandler(stream) if stream is not None else _StderrHandler(sys.stderr)
    if under_journal():
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(_TerminalFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):  # a second call (tests, the pipeline) replaces, never doubles, the output
        if getattr(old, "_mobile_vla", False):
            root.removeHandler(old)
    handler._mobile_vla = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    for noisy in ("matplotlib", "PIL", "urllib3", "h5py", "fsspec"):  # their debug output is not the robot's
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


def log_info(message: str, logger: logging.Logger = logging.getLogger("runtime")) -> None:
    """A loop's closing line as an event: an error at error level, without a second 'error:' prefix."""
    if message.startswith("error: "):
        logger.error("%s", message[len("error: "):])
    else:
        logger.info("%s", message)


