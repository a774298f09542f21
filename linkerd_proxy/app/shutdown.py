"""Graceful shutdown: one trigger, observed by every part of the running proxy.

SIGTERM/SIGINT (``app.run``), the admin ``POST /shutdown`` and the test harness all
call :meth:`Shutdown.trigger`. The runtime then stops accepting, lets the
connections in flight finish (HTTP ones learn of it through :meth:`Shutdown.wait`
and close after their current request), and cancels what is left once the grace
period is over.
"""

from __future__ import annotations

import trio


class Shutdown:
    """A one-shot, thread-safe shutdown trigger with a reason.

    ``trigger`` may be called from any trio task, and from other threads through
    :meth:`trigger_from_thread` (e.g. a signal handler in a host program).
    """

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reason: str | None = None

    @property
    def is_triggered(self) -> bool:
        return self._event.is_set()

    def trigger(self, reason: str) -> None:
        """Start shutting down (the first reason is kept; later calls do nothing)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def trigger_from_thread(self, reason: str, token: trio.lowlevel.TrioToken) -> None:
        """Like :meth:`trigger`, from a thread outside trio."""
        token.run_sync_soon(self.trigger, reason)

    async def wait(self) -> None:
        """Return once shutdown has been triggered."""
        await self._event.wait()
