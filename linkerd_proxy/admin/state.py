"""What the admin server reads and pokes: readiness, the log filter, metrics, shutdown.

Where it sits: the admin endpoints (``endpoints.py``) are functions of a request and
an :class:`AdminState`; ``app`` builds the state from the runtime (the metrics
registry, the log module's filter handle, the shutdown trigger, the identity
readiness) and hands it to :func:`~linkerd_proxy.admin.server.serve_admin`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import trio


class LogLevelHandle(Protocol):
    """Reads and replaces the process's log filter (``LINKERD2_PROXY_LOG`` syntax)."""

    def get(self) -> str:
        """The filter in force, as text."""
        ...

    def set(self, text: str) -> None:
        """Replace the filter.

        Raises:
            ValueError: if ``text`` is not a valid filter; ``str()`` of the error is
                shown to the client.
        """
        ...


class Readiness:
    """Whether the proxy is ready for meshed traffic; once ready, ready for good.

    The flag itself needs no trio run (``set_ready`` may be called from anywhere in
    the trio thread, even before ``trio.run``); :meth:`wait` blocks a task until it
    is set.

    Args:
        ready: start ready (the standalone proxy, with no identity to wait for).
    """

    def __init__(self, *, ready: bool = False) -> None:
        self._ready = ready
        self._event = trio.Event()
        if ready:
            self._event.set()

    def is_ready(self) -> bool:
        return self._ready

    def set_ready(self) -> None:
        """Mark the proxy ready (idempotent) and wake every :meth:`wait`."""
        self._ready = True
        self._event.set()

    async def wait(self) -> None:
        """Return once the proxy is ready (at once if it already is).

        Cancellation: a plain wait, safe to cancel.
        """
        await self._event.wait()


@attrs.define
class AdminState:
    """Everything the admin endpoints need.

    Attributes:
        render_metrics: returns the whole exposition text served on ``/metrics``.
        readiness: answers ``/ready``.
        log_level: read and replaced through ``/proxy-log-level``; None when the
            filter cannot be changed (logging set up with ``off``), and then that
            endpoint answers 404, as the reference does.
        shutdown: called by ``POST /shutdown``; None disables the endpoint (404).
        env: the environment shown by ``/env.json`` (normally ``os.environ``).
    """

    render_metrics: Callable[[], str]
    readiness: Readiness
    log_level: LogLevelHandle | None
    shutdown: Callable[[], None] | None
    env: Mapping[str, str]
