"""The `proglog` command line."""

from pyproglog.cli.app import app, main

__all__ = ["app", "main"]
