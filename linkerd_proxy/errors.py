"""The proxy's error hierarchy, one flat module.

I/O code maps OS and library exceptions onto these at the boundary, so that upper
layers (metrics, synthetic responses) classify errors without knowing where they
came from.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error the proxy raises on purpose."""


class ConfigError(ProxyError):
    """An invalid ``LINKERD2_PROXY_*`` value.

    ``str()`` is the message the binary prints before exiting 64:
    ``Invalid configuration: <VAR>=<value>: <why>``.
    """

    def __init__(self, var: str, value: str, reason: str) -> None:
        super().__init__(var, value, reason)
        self.var = var
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"Invalid configuration: {self.var}={self.value}: {self.reason}"


class ConnectError(ProxyError):
    """Connecting to an endpoint failed; ``errno`` is set when the OS gave one."""

    def __init__(self, addr: object, reason: str, errno: int | None = None) -> None:
        super().__init__(f"connect to {addr} failed: {reason}")
        self.addr = addr
        self.errno = errno


class ConnectTimeout(ConnectError):
    """Connecting did not finish within the connect timeout."""


class OrigDstError(ProxyError):
    """The original destination of an accepted connection could not be read."""


class ForbiddenOrigDst(ProxyError):
    """Inbound: the original destination is not one of ``INBOUND_IPS``."""


class LoopDetected(ProxyError):
    """A connection would be forwarded to the proxy's own listener."""


class ResponseTimeout(ProxyError):
    """A timeout layer fired before the inner service answered.

    ``timeout`` is the bound in seconds that expired, when known.
    """

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(
            "response timed out" if timeout is None else f"response timed out after {timeout}s"
        )
        self.timeout = timeout
