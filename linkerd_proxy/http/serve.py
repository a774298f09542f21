"""After protocol detection: serve HTTP/1 or HTTP/2 with the right driver.

Both accept paths call :func:`serve_http` when detection found HTTP; the drivers get
the bytes detection already read as their ``prefix``.
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.h1.server import H1ServerSettings, serve_h1
from linkerd_proxy.http.h2.server import serve_h2
from linkerd_proxy.http.h2.settings import H2ServerSettings
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.stack import Service


@attrs.frozen
class HttpServerParams:
    """How a direction serves HTTP: driver settings and the drain signal."""

    h1: H1ServerSettings = attrs.field(factory=H1ServerSettings)
    h2: H2ServerSettings = attrs.field(factory=H2ServerSettings)
    drain: Shutdown | None = None


async def serve_http(
    detected: Detected,
    stream: trio.abc.Stream,
    prefix: bytes,
    service: Service[Request, Response],
    params: HttpServerParams,
    *,
    extensions: dict[type, object] | None = None,
) -> None:
    """Serve the connection with the driver ``detected`` names.

    Args:
        detected: ``Detected.H2`` or ``Detected.HTTP1``.
        stream: the connection (already metered).
        prefix: the bytes detection read.
        service: the direction's HTTP service.
        params: driver settings and drain.
        extensions: put on every request (connection info).

    Raises:
        ValueError: ``detected`` is not an HTTP version.
    """
    if detected is Detected.H2:
        await serve_h2(
            stream,
            service,
            settings=params.h2,
            drain=params.drain,
            prefix=prefix,
            extensions=extensions,
        )
    elif detected is Detected.HTTP1:
        await serve_h1(
            stream,
            service,
            settings=params.h1,
            drain=params.drain,
            prefix=prefix,
            extensions=extensions,
        )
    else:
        raise ValueError(f"not an HTTP protocol: {detected}")
