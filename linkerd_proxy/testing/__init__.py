"""The public test harness: a real proxy for your integration tests.

- :func:`open_proxy` runs a proxy in-process in your trio test, with an injectable
  original destination (no iptables needed); :func:`local_config` gives a
  configuration with every listener on 127.0.0.1:0.
- :class:`Scrape` parses ``/metrics`` and answers questions about it.
- :mod:`linkerd_proxy.testing.netns` and :mod:`linkerd_proxy.testing.process` run
  the real binary behind linkerd-init's iptables rules in network namespaces
  (root only); :mod:`linkerd_proxy.testing.peers` holds small TCP applications
  to put on either side.

See docs/testing.md.
"""

from linkerd_proxy.testing.proxy import HttpResponse, RunningProxy, local_config, open_proxy
from linkerd_proxy.testing.scrape import Sample, Scrape

__all__ = [
    "HttpResponse",
    "RunningProxy",
    "Sample",
    "Scrape",
    "local_config",
    "open_proxy",
]
