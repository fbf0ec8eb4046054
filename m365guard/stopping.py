"""A stop asked for by SIGTERM or Ctrl-C, never lost on its way to the run.

The signal handler (cli/main.py) raises KeyboardInterrupt wherever the main thread happens to
be. If that is inside a finalizer (an SSL socket or a future garbage-collected mid-night),
Python reports the exception as 'unraisable' and drops it, and the run would go on to the end
(seen in CI on 2026-12-02: SIGINT at half the streams, the night completed). So the handler
also records the request here, and the run calls `checkpoint()` between its steps and after
each stream it reads: a stop is honoured within one stream, whatever swallowed the first raise.
"""

from __future__ import annotations

_requested: list[str] = []


def request(signal_name: str) -> None:
    """Record that a signal asked the run to stop."""
    _requested.append(signal_name)


def requested() -> str:
    """The name of the first signal that asked for a stop, or '' if none did."""
    return _requested[0] if _requested else ""


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a stop was asked for and the run is still going."""
    if _requested:
        raise KeyboardInterrupt(_requested[0])
