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
"""

from __future__ import annotations

import logging
import os
import sys

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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when the event happens (a test harness or the pipeline may have swapped
    it since setup), so no event goes to a stream that was closed in between."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str = DEFAULT_LEVEL, stream=None) -> None:
    """Send the project's events to stderr (or `stream`) at `level`; called once by each command's main."""
    if level not in LEVELS:
        raise ValueError(f"--log-level: expected one of {', '.join(LEVELS)}, found {level!r}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler(sys.stderr)
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


