"""Response classification: success or failure, for metrics (pure, sans-IO).

Sits beside the HTTP metrics layer (``metrics_layer.py``), which asks it to
classify each response when its head arrives, again at the end of its body (gRPC
statuses may come in trailers), or when the call or the body fails. Retries and
failure accrual use the same :class:`Class`.

The default classification is the reference's (``linkerd/app/core/src/classify.rs``):

- A request whose ``content-type`` starts with ``application/grpc`` is classified
  by its response's ``grpc-status``, from the response headers (trailers-only
  responses) or else the trailers. Codes DataLoss (15), DeadlineExceeded (4),
  Internal (13), PermissionDenied (7), Unavailable (14) and Unknown (2) are
  failures. A value that is not a number is ignored; a number that is not a gRPC
  code counts as Unknown (2). A gRPC response that ends with no status at all is,
  as in the reference, a *success* with ``grpc_status="2"``.
- Any other response is a failure when its status is 5xx.
- An error is a failure with an ``error`` label: ``timeout`` for a response
  timeout, ``h2(<REASON>)`` for an HTTP/2 reset, else ``unclassified``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from ..errors import ResponseTimeout
from .body import StreamReset
from .model import Headers, header

__all__ = [
    "DEFAULT_GRPC_FAILURES",
    "Class",
    "Classify",
    "ClassifyEos",
    "classify_error",
    "grpc_code",
    "h2_reason_name",
    "is_grpc",
]

#: The gRPC codes the reference counts as failures by default.
DEFAULT_GRPC_FAILURES: frozenset[int] = frozenset({15, 4, 13, 7, 14, 2})
_GRPC_UNKNOWN = 2
_MAX_GRPC_CODE = 16

_H2_REASONS = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)


@attrs.frozen(cache_hash=True)
class Class:
    """A classified response (or error).

    Attributes:
      failure: whether it counts as a failure.
      grpc_status: the gRPC status code when gRPC classified it, else ``None``.
      error: the error label when an error ended it, else ``None``.
    """

    failure: bool
    grpc_status: int | None = None
    error: str | None = None

    @property
    def is_success(self) -> bool:
        return not self.failure


def is_grpc(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when ``content-type`` starts with ``application/grpc``."""
    ct = header(headers, b"content-type")
    return ct is not None and ct.startswith(b"application/grpc")


def grpc_code(headers: Iterable[tuple[bytes, bytes]] | None) -> int | None:
    """The ``grpc-status`` code in ``headers``, as the reference reads it.

    Returns ``None`` when absent or not a number; numbers that are not gRPC codes
    map to Unknown (2).
    """
    if headers is None:
        return None
    raw = header(headers, b"grpc-status")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 5:
        return None
    code = int(text)
    if code > 0xFFFF:
        return None
    return code if code <= _MAX_GRPC_CODE else _GRPC_UNKNOWN


def h2_reason_name(code: int) -> str:
    """The name the reference prints for an HTTP/2 error code (``PROTOCOL_ERROR``)."""
    if 0 <= code < len(_H2_REASONS):
        return _H2_REASONS[code]
    return f"Reason({code})"


def classify_error(error: BaseException) -> Class:
    """Classify a call or body that failed with ``error``."""
    if isinstance(error, ResponseTimeout):
        return Class(failure=True, error="timeout")
    if isinstance(error, StreamReset):
        return Class(failure=True, error=f"h2({h2_reason_name(error.code)})")
    return Class(failure=True, error="unclassified")


@attrs.frozen
class ClassifyEos:
    """The classification of a response whose head has arrived; ends with the body.

    Attributes:
      decided: the class when the head alone decided it.
      grpc_failures: for a gRPC response still open, the failing codes.
    """

    decided: Class | None
    grpc_failures: frozenset[int] = DEFAULT_GRPC_FAILURES

    def eos(self, trailers: Headers | None) -> Class:
        """Classify at the end of the body, given its trailers (if any)."""
        if self.decided is not None:
            return self.decided
        code = grpc_code(trailers)
        if code is None:
            # The reference's choice: an unterminated gRPC stream is not a failure.
            return Class(failure=False, grpc_status=_GRPC_UNKNOWN)
        return Class(failure=code in self.grpc_failures, grpc_status=code)

    def error(self, error: BaseException) -> Class:
        """Classify a body that failed with ``error``."""
        return classify_error(error)


@attrs.frozen
class Classify:
    """How to classify the response to one request (built from the request).

    Attributes:
      grpc: classify by ``grpc-status`` (the request is gRPC).
      grpc_failures: gRPC codes that are failures.
      http_failure_ranges: inclusive status ranges that are failures (5xx).
    """

    grpc: bool = False
    grpc_failures: frozenset[int] = DEFAULT_GRPC_FAILURES
    http_failure_ranges: tuple[tuple[int, int], ...] = ((500, 599),)

    @classmethod
    def for_request(cls, headers: Iterable[tuple[bytes, bytes]]) -> Classify:
        """The default classifier for a request with these headers (shared
        instances: a classifier is immutable)."""
        return _DEFAULT_GRPC if is_grpc(headers) else _DEFAULT_HTTP

    def start(self, status: int, headers: Headers) -> ClassifyEos:
        """Classify a response head; the result finishes at the end of the body."""
        if self.grpc:
            code = grpc_code(headers)
            if code is None:
                return ClassifyEos(None, self.grpc_failures)
            return ClassifyEos(Class(failure=code in self.grpc_failures, grpc_status=code))
        for lo, hi in self.http_failure_ranges:
            if lo <= status <= hi:
                return _HTTP_FAILURE
        return _HTTP_SUCCESS

    def classify(self, status: int, headers: Headers, trailers: Headers | None = None) -> Class:
        """Classify a complete response (head and trailers) at once."""
        return self.start(status, headers).eos(trailers)

    def error(self, error: BaseException) -> Class:
        """Classify a call that failed with ``error`` before any response."""
        return classify_error(error)


_DEFAULT_HTTP: Final = Classify()
_DEFAULT_GRPC: Final = Classify(grpc=True)
# The two outcomes of a plain HTTP classification (immutable, so shared).
_HTTP_SUCCESS: Final = ClassifyEos(Class(failure=False))
_HTTP_FAILURE: Final = ClassifyEos(Class(failure=True))
