"""The admin server on port 4191: /live, /ready, /metrics, /proxy-log-level,
/env.json and /shutdown.

``state`` holds what the endpoints read and change, ``endpoints`` routes and answers
requests (no I/O), ``server`` runs the accept loop and the HTTP/1 connections.
"""

from linkerd_proxy.admin.endpoints import AdminRequest, AdminResponse, handle_request
from linkerd_proxy.admin.server import AdminServerConfig, handle_admin_connection, serve_admin
from linkerd_proxy.admin.state import AdminState, LogLevelHandle, Readiness

__all__ = [
    "AdminRequest",
    "AdminResponse",
    "AdminServerConfig",
    "AdminState",
    "LogLevelHandle",
    "Readiness",
    "handle_admin_connection",
    "handle_request",
    "serve_admin",
]
