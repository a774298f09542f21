"""The HTTP metrics layer: count requests, classify and time their responses.

A request-level layer of the inbound and outbound endpoint stacks (the
reference's ``linkerd/http/metrics/src/requests/service.rs``), reporting into
:mod:`linkerd_proxy.metrics.http`:

- ``request_total`` when the call starts;
- when the response head arrives it is classified (:mod:`.classify`) and its body
  wrapped; ``response_latency_ms`` is observed when the body first yields (a
  chunk, or its end), as in the reference, measured from the call (the request
  headers); ``response_total`` when the body ends (with its trailers, for gRPC),
  fails, or is closed early;
- when the call raises, ``response_total`` without ``status_code``, classified as
  a failure with an ``error`` label, and no latency.

A response whose body is known to be empty at the head (``is_end_stream``) is
recorded at once, since a driver may never read it. A driver that drops a body
without reading or closing it records nothing for it: drivers close bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

import attrs
import trio

from ..metrics.http import (
    Classification,
    HttpClassLabels,
    HttpMetrics,
    HttpTargetLabels,
    HttpTargetMetrics,
)
from ..stack import NewService, Service
from .body import Body
from .classify import Class, Classify, ClassifyEos
from .model import Request, Response

__all__ = ["HttpMetricsService", "NewHttpMetrics", "class_labels"]

T = TypeVar("T")

HttpService = Service[Request, Response]


def class_labels(cls: Class) -> HttpClassLabels:
    """The ``classification,grpc_status,error`` labels of a :class:`Class`
    (memoized: a few classes recur on every request)."""
    labels = _CLASS_LABELS.get(cls)
    if labels is None:
        labels = HttpClassLabels(
            Classification.FAILURE if cls.failure else Classification.SUCCESS,
            cls.grpc_status,
            cls.error or "",
        )
        if len(_CLASS_LABELS) < _CLASS_LABELS_MAX:
            _CLASS_LABELS[cls] = labels
    return labels


# Bounded: error labels come from a fixed set of kinds, but do not trust that.
_CLASS_LABELS_MAX: Final = 256
_CLASS_LABELS: Final[dict[Class, HttpClassLabels]] = {}


class _MeteredBody(Body):
    """Wraps a response body; records latency and class as it is read."""

    def __init__(
        self,
        inner: Body,
        metrics: HttpTargetMetrics,
        status: int,
        eos: ClassifyEos,
        started: float,
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._status = status
        self._eos: ClassifyEos | None = eos
        self._started: float | None = started
        self.content_length = inner.content_length

    @property
    def is_end_stream(self) -> bool:
        return self._inner.is_end_stream

    @property
    def buffered(self) -> int:
        return self._inner.buffered

    def _record_latency(self) -> None:
        if self._started is not None:
            elapsed = trio.current_time() - self._started
            self._started = None
            self._metrics.latency(self._status, int(max(elapsed, 0.0) * 1000))

    def _record_class(self, cls: Class) -> None:
        self._eos = None
        self._metrics.response(self._status, class_labels(cls))

    async def read(self) -> bytes:
        try:
            chunk = await self._inner.read()
        except Exception as exc:
            self._record_latency()
            if self._eos is not None:
                self._record_class(self._eos.error(exc))
            raise
        self._record_latency()
        if not chunk:
            self.trailers = self._inner.trailers
            if self._eos is not None:
                self._record_class(self._eos.eos(self.trailers))
        return chunk

    async def aclose(self) -> None:
        self._record_latency()
        if self._eos is not None:
            self._record_class(self._eos.eos(None))
        await self._inner.aclose()


@attrs.frozen
class HttpMetricsService:
    """Record the legacy HTTP metrics of every request through ``inner``.

    Attributes:
      inner: the service measured.
      metrics: the target's series (:meth:`HttpMetrics.target`).
    """

    inner: HttpService
    metrics: HttpTargetMetrics

    async def __call__(self, req: Request, /) -> Response:
        """Count ``req``, call ``inner``, and wrap the response body to finish the record.

        Raises:
          Exception: whatever ``inner`` raises (after counting it).

        Cancellation: a cancelled call records no response, as in the reference.
        """
        metrics = self.metrics
        metrics.request()
        classify = Classify.for_request(req.headers)
        started = trio.current_time()
        try:
            rsp = await self.inner(req)
        except Exception as exc:
            metrics.response(None, class_labels(classify.error(exc)))
            raise
        eos = classify.start(rsp.status, rsp.headers)
        body = _MeteredBody(rsp.body, metrics, rsp.status, eos, started)
        if rsp.body.is_end_stream:
            body._record_latency()
            body._record_class(eos.eos(None))
        rsp.body = body
        return rsp


@attrs.frozen
class NewHttpMetrics(Generic[T]):
    """``NewService`` layer: wrap each target's service in :class:`HttpMetricsService`.

    Attributes:
      inner: makes the service for a target.
      metrics: the shared families.
      labels: the target labels **T** of a target.
    """

    inner: NewService[T, HttpService]
    metrics: HttpMetrics
    labels: Callable[[T], HttpTargetLabels]

    def __call__(self, target: T, /) -> HttpMetricsService:
        return HttpMetricsService(self.inner(target), self.metrics.target(self.labels(target)))

    @staticmethod
    def layer(
        metrics: HttpMetrics, labels: Callable[[T], HttpTargetLabels]
    ) -> Callable[[NewService[T, HttpService]], NewHttpMetrics[T]]:
        """The layer: ``NewService[T, HttpService] -> NewHttpMetrics[T]``."""

        def wrap(inner: NewService[T, HttpService]) -> NewHttpMetrics[T]:
            return NewHttpMetrics(inner, metrics, labels)

        return wrap
