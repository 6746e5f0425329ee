"""Wires one node together and owns its lifecycle (start, drain, stop)."""

from pyproglog.agent.agent import Agent, run

__all__ = ["Agent", "run"]
