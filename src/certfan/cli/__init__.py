"""Command line: argv -> exit code. The only place that prints."""

from certfan.cli.app import main

__all__ = ["main"]
