"""Proxy error counters: ``{inbound,outbound}_{tcp,http}_errors_total``.

Sits on the metrics registry. The stacks classify a failure into an error kind
(that classification is the app's, not this module's) and record it here. Pure:
no I/O, no trio.

Label layouts and values are the reference's
(``linkerd/app/{inbound,outbound}/src/metrics/error{,/tcp,/http}.rs``):

- ``inbound_tcp_errors_total{error,target_addr,target_ip,target_port}``
- ``outbound_tcp_errors_total{target_addr,target_ip,target_port,error}``
- ``inbound_http_errors_total{error,target_addr,target_ip,target_port,srv_*}``
- ``outbound_http_errors_total{error}``
"""

from __future__ import annotations

import enum

import attrs

from linkerd_proxy.metrics.labels import Direction, ServerLabels, TargetAddrLabels, join, label
from linkerd_proxy.metrics.registry import CounterFamily, Registry


class InboundErrorKind(enum.StrEnum):
    """The inbound ``error`` label values."""

    LOADSHED = "loadshed"
    FAILFAST = "failfast"
    TLS_DETECT_TIMEOUT = "tls detection timeout"
    GATEWAY_LOOP = "gateway loop"
    GATEWAY_DOMAIN_INVALID = "gateway domain invalid"
    IO = "i/o"
    UNEXPECTED = "unexpected"

    def render(self) -> str:
        return label("error", self.value)


class OutboundErrorKind(enum.StrEnum):
    """The outbound ``error`` label values."""

    LOADSHED = "loadshed"
    FAILFAST = "failfast"
    IDENTITY_REQUIRED = "identity required"
    IO = "i/o"
    RESPONSE_TIMEOUT = "response timeout"
    UNEXPECTED = "unexpected"

    def render(self) -> str:
        return label("error", self.value)


@attrs.frozen
class InboundTcpErrorLabels:
    error: InboundErrorKind = attrs.field(converter=InboundErrorKind)
    target: TargetAddrLabels

    def render(self) -> str:
        return join(self.error.render(), self.target.render())


@attrs.frozen
class OutboundTcpErrorLabels:
    target: TargetAddrLabels
    error: OutboundErrorKind = attrs.field(converter=OutboundErrorKind)

    def render(self) -> str:
        return join(self.target.render(), self.error.render())


@attrs.frozen
class InboundHttpErrorLabels:
    error: InboundErrorKind = attrs.field(converter=InboundErrorKind)
    target: TargetAddrLabels
    srv: ServerLabels

    def render(self) -> str:
        return join(self.error.render(), self.target.render(), self.srv.render())


@attrs.frozen
class OutboundHttpErrorLabels:
    error: OutboundErrorKind = attrs.field(converter=OutboundErrorKind)

    def render(self) -> str:
        return self.error.render()


_TCP_HELP = (
    "The total number of {} TCP connections that could not be processed due to a proxy error."
)
_HTTP_HELP = (
    "The total number of {} HTTP requests that could not be processed due to a proxy error."
)


class TcpErrorMetrics:
    """``<direction>_tcp_errors_total``, registered on ``registry``.

    Args:
      registry: where to register the family.
      direction: inbound or outbound; fixes the metric name, the label order and
        the accepted error kinds.

    Raises:
      ValueError: the family is already registered.
    """

    def __init__(self, registry: Registry, direction: Direction) -> None:
        self.direction = direction
        name = f"{direction.value}_tcp_errors_total"
        self._inbound: CounterFamily[InboundTcpErrorLabels] | None = None
        self._outbound: CounterFamily[OutboundTcpErrorLabels] | None = None
        if direction is Direction.INBOUND:
            self._inbound = registry.register(
                CounterFamily[InboundTcpErrorLabels](name, _TCP_HELP.format("inbound"))
            )
        else:
            self._outbound = registry.register(
                CounterFamily[OutboundTcpErrorLabels](name, _TCP_HELP.format("outbound"))
            )

    def record(self, error: str, target: TargetAddrLabels) -> None:
        """Count one connection that failed with ``error`` for ``target``.

        Raises:
          ValueError: ``error`` is not one of this direction's error kinds.
        """
        if self._inbound is not None:
            self._inbound.get(InboundTcpErrorLabels(InboundErrorKind(error), target)).inc()
        else:
            assert self._outbound is not None
            self._outbound.get(OutboundTcpErrorLabels(target, OutboundErrorKind(error))).inc()


class InboundHttpErrorMetrics:
    """``inbound_http_errors_total{error,target_*,srv_*}``."""

    def __init__(self, registry: Registry) -> None:
        self.family = registry.register(
            CounterFamily[InboundHttpErrorLabels](
                "inbound_http_errors_total", _HTTP_HELP.format("inbound")
            )
        )

    def record(self, error: str, target: TargetAddrLabels, srv: ServerLabels) -> None:
        """Count one request that failed with ``error``.

        Raises:
          ValueError: ``error`` is not an inbound error kind.
        """
        self.family.get(InboundHttpErrorLabels(InboundErrorKind(error), target, srv)).inc()


class OutboundHttpErrorMetrics:
    """``outbound_http_errors_total{error}``."""

    def __init__(self, registry: Registry) -> None:
        self.family = registry.register(
            CounterFamily[OutboundHttpErrorLabels](
                "outbound_http_errors_total", _HTTP_HELP.format("outbound")
            )
        )

    def record(self, error: str) -> None:
        """Count one request that failed with ``error``.

        Raises:
          ValueError: ``error`` is not an outbound error kind.
        """
        self.family.get(OutboundHttpErrorLabels(OutboundErrorKind(error))).inc()
