"""The ``/metrics`` body: legacy text, then the process metrics, ``# EOF``.

Top of the metrics layer; the admin server calls :func:`render` per scrape and
:func:`maybe_gzip` on the result. As in the reference, the body is the legacy
families (Linkerd's label formats, ours) followed by the process and build
metrics (``metrics.process``), and ends with ``# EOF``; served as ``text/plain``.

The process part is rendered in the Prometheus text format (0.0.4), the
format ``text/plain`` announces, not in OpenMetrics as the reference does: in
OpenMetrics a counter's ``# TYPE`` names the family without ``_total``
(``# TYPE process_cpu_seconds counter`` over ``process_cpu_seconds_total``), so
a text-format consumer (Prometheus itself, ``promtool check metrics``) files that
metadata under a name no sample has and sees ``process_cpu_seconds_total`` as an
untyped series without help. The samples (names, labels, values) are the same in
both formats; only the HELP/TYPE names of counters differ. Pure: no trio.
"""

from __future__ import annotations

import gzip

from linkerd_proxy.metrics.process import ProcessMetrics
from linkerd_proxy.metrics.registry import Registry

CONTENT_TYPE = "text/plain"
_EOF = "# EOF\n"


def render(registry: Registry, process: ProcessMetrics | None = None) -> str:
    """Render one scrape and run retain-idle eviction on ``registry``.

    Args:
      registry: the legacy families (rendered first).
      process: the process and build-info metrics, or ``None``.

    Returns:
      The text body, always ending with ``# EOF\\n``.
    """
    legacy = registry.render()
    if process is None:
        return legacy + _EOF
    return legacy + process.render() + _EOF


def wants_gzip(accept_encoding: str | None) -> bool:
    """True when an ``Accept-Encoding`` value mentions gzip (the reference's test)."""
    return accept_encoding is not None and "gzip" in accept_encoding


def maybe_gzip(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress ``body`` if the client accepts gzip.

    Args:
      body: the rendered metrics.
      accept_encoding: the request's ``Accept-Encoding`` header values joined with
        ``,`` (or ``None`` when absent).

    Returns:
      ``(body, content_encoding)``: gzip bytes and ``"gzip"``, or ``body`` unchanged
      and ``None``.
    """
    if not wants_gzip(accept_encoding):
        return body, None
    return gzip.compress(body, compresslevel=1, mtime=0), "gzip"
