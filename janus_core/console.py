"""Command-line plumbing shared by every ``janus-vln`` subcommand (standard library only).

The habits every subcommand keeps:

- results (tables, file lists) go to stdout; logs go to stderr (:func:`setup_logging`);
- ``-v`` / ``--verbose`` raises the log level to DEBUG (:func:`add_verbose`);
- a user mistake ends the command with exactly one line on stderr, ``janus-vln <command>:
  error: <what was wrong and what to do>``, and a non-zero exit code, never a traceback
  (:func:`fail`); an interruption says what was kept (:func:`interrupted`, exit code 130).
"""

from __future__ import annotations

import argparse
import logging
import sys

PROG = "janus-vln"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_USAGE = 2  # a mistake in what was asked (argparse uses 2 as well)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def add_verbose(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-v`` / ``--verbose`` (DEBUG logging) to ``parser``; returns it."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more log output (DEBUG), on stderr")
    return parser


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); raise the level if already set up."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    elif verbose:
        root.setLevel(logging.DEBUG)


def one_line(message: object) -> str:
    """``message`` as a single line: inner newlines become ``"; "``, runs of spaces one space."""
    parts = [" ".join(line.split()) for line in str(message).splitlines()]
    return "; ".join(p for p in parts if p)


def fail(command: str, message: object, code: int = EXIT_USAGE) -> int:
    """Write ``janus-vln <command>: error: <message>`` (one line) to stderr; return ``code``."""
    sys.stderr.write(f"{PROG} {command}: error: {one_line(message)}\n")
    sys.stderr.flush()
    return code


def interrupted(command: str, what: str) -> int:
    """Write ``janus-vln <command>: interrupted: <what>`` to stderr; return 130."""
    sys.stderr.write(f"{PROG} {command}: interrupted: {one_line(what)}\n")
    sys.stderr.flush()
    return EXIT_INTERRUPTED


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line too (argparse prints the usage first).

    ``janus-vln eval --width abc`` ends with ``janus-vln eval: error: argument --width: invalid
    int value: 'abc' (see janus-vln eval --help)`` and exit code 2.
    """

    def error(self, message: str):
        """Print one line naming the mistake and exit with code 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} "
                              "--help)\n")
