"""Fixtures for tests/reliability; the helpers live in site_support.py (conftest is not
importable by name once several test folders each have one)."""

from site_support import emu_workdir, emulator, school, site

__all__ = ["emu_workdir", "emulator", "school", "site"]
