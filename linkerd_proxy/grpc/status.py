"""gRPC status codes (pure: no I/O, no trio).

The vocabulary of :class:`linkerd_proxy.errors.GrpcError` and of the control-plane
clients' recovery rules (which codes end a watch for good, which are retried).
Numbers are the wire values of ``grpc-status``.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """The gRPC status codes, by their wire numbers."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(status: int) -> str:
    """The name of ``status`` (``UNAVAILABLE``), or its number if it is not a known code."""
    try:
        return Code(status).name
    except ValueError:
        return str(status)


#: Codes after which a control-plane watch is not retried: the request itself is
#: wrong, so asking again cannot help (the reference's Destination and policy
#: clients give up on these).
FATAL_FOR_WATCH: frozenset[Code] = frozenset({Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION})
