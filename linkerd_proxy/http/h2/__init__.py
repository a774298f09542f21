"""HTTP/2 for the proxy: the server driver and the client connection, on h2.

Sits beside ``http/h1``: detection hands an HTTP/2 connection to :func:`serve_h2`,
and endpoint stacks open an :class:`H2Connection` per upstream connection. The
shared connection core (read/write loops, flow control, streams) is ``conn.py``;
header-block checks are ``headers.py`` (pure); settings are ``settings.py``.
"""

from .client import H2Connection, open_h2_connection
from .server import serve_h2
from .settings import H2ClientSettings, H2ServerSettings

__all__ = [
    "H2ClientSettings",
    "H2Connection",
    "H2ServerSettings",
    "open_h2_connection",
    "serve_h2",
]
