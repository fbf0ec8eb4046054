"""Fixtures for tests/graph; the helpers live in graph_support.py (conftest is not importable
by name once several test folders each have one)."""

from graph_support import emulator, school, workdir

__all__ = ["emulator", "school", "workdir"]
