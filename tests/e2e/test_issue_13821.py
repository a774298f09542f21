"""linkerd2 issue 13821, replayed: one destination flips between two meshed paths.

The issue: a workload's proxy exported two ``response_total`` (and other) lines with
the same name and labels, so Prometheus dropped samples ("duplicate sample for
timestamp"). The reference keyed its series by structs that compared more than
the labels rendered: the TLS *server name* (SNI, not printed: only ``server_id``
is), the negotiated ALPN (``transport.l5d.io/v1`` on the transport-header path,
none on a plain port) and the endpoint's protocol hints. When the same
destination was reached both through plain port routing and through the
transport header on 4143, the inbound side had two keys that rendered alike.

The replay, in-process (as ``test_mtls_inprocess.py``): proxy A (client) sends
HTTP/1 to the service ``web`` while the fake Destination switches web's endpoint,
several times, between

* **plain port routing**: ``127.0.0.2:<B's inbound port>`` with B's identity. B
  listens on every interface; its orig-dst lookup maps connections arriving on
  127.0.0.2 to the application (as iptables would), so B terminates mTLS without
  ALPN and detects HTTP;
* **the transport header**: ``127.0.0.1:<app port>`` with ``opaque_port`` = B's
  inbound port. A connects to B's inbound port itself (the *direct* path), ALPN
  ``transport.l5d.io/v1``, header naming the app port and the HTTP session.

Both paths reach the same application with the same client identity, so on B
they render identical labels: they must be *one* series. On A they differ in
``target_addr`` (the endpoint address), so they are two distinct series. Both
proxies are scraped throughout and after; no scrape may contain a line twice,
and both paths must have carried traffic (B's orig-dst lookup counts how each
connection arrived: ``local`` = plain port, ``direct`` = the inbound port).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing import Scrape, open_proxy
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.control_plane import open_control_plane
from linkerd_proxy.testing.traffic import (
    ANY,
    LOCALHOST,
    LOCALHOST_2,
    MAIN_ID,
    PEER_ID,
    SERVICE_NAMES,
    WEB,
    OrigDstRouter,
    http_handler,
    meshed_config,
    serve_tcp,
    wait_ready,
)

A_ID, B_ID = MAIN_ID, PEER_ID
NAME = f"{SERVICE_NAMES[WEB]}:{WEB.port}"
SWITCHES = 6
#: Requests sent after each switch took effect, before the next one.
PER_PHASE = 5


async def _get(addr: SocketAddr) -> int:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(*addr.to_sockaddr())
        async with stream:
            await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := await stream.receive_some(65536):
                got += chunk
    return int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else 0


@attrs.define
class Run:
    statuses: list[int] = attrs.Factory(list)
    scrapes_a: list[Scrape] = attrs.Factory(list)
    scrapes_b: list[Scrape] = attrs.Factory(list)
    phases: list[tuple[str, int, int]] = attrs.Factory(list)


async def test_switching_between_port_routing_and_the_transport_header() -> None:
    run = Run()
    b_router = OrigDstRouter()
    with trio.fail_after(30), tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery, open_control_plane() as cp:
            app = await serve_tcp(nursery, http_handler)
            await cp.policy.outbound_not_found()
            await cp.dst.profile(str(WEB), fqn=SERVICE_NAMES[WEB])
            b_config = await meshed_config(cp, Path(tmp), B_ID)
            b_config = attrs.evolve(
                b_config, inbound=attrs.evolve(b_config.inbound, listen_addr=SocketAddr(ANY, 0))
            )
            async with open_proxy(b_config, orig_dst=b_router, bind_locally=False) as b:
                port = b.addrs.inbound.port
                b_router.direct_ports.add(port)
                b_router.local_routes[SocketAddr(LOCALHOST_2, port)] = app
                forms = {
                    "port": Endpoint(SocketAddr(LOCALHOST_2, port), tls_identity=B_ID),
                    "header": Endpoint(app, tls_identity=B_ID, opaque_port=port),
                }
                await cp.dst.set_endpoints(NAME, [forms["port"]])
                a_config = await meshed_config(cp, Path(tmp), A_ID)
                async with open_proxy(a_config, orig_dst=WEB) as a:
                    await wait_ready(a)
                    await wait_ready(b)
                    done = trio.Event()

                    async def traffic() -> None:
                        while not done.is_set():
                            run.statuses.append(await _get(a.addrs.outbound[0]))

                    async def scraper() -> None:
                        while not done.is_set():
                            run.scrapes_a.append(await a.scrape())
                            run.scrapes_b.append(await b.scrape())
                            await trio.sleep(0.02)

                    async with trio.open_nursery() as inner:
                        for _ in range(3):
                            inner.start_soon(traffic)
                        inner.start_soon(scraper)
                        for i in range(SWITCHES):
                            form = ("port", "header")[i % 2]
                            await cp.dst.set_endpoints(NAME, [forms[form]])
                            key = "direct" if form == "header" else "local"
                            start = b_router.hits[key] if i else 0
                            # A pools its connection to an endpoint: a new one on
                            # this path shows the switch, then some requests use it.
                            while b_router.hits[key] == start:  # noqa: ASYNC110
                                await trio.sleep(0.01)
                            sent = len(run.statuses)
                            while len(run.statuses) < sent + PER_PHASE:  # noqa: ASYNC110
                                await trio.sleep(0.01)
                            run.phases.append((form, start, b_router.hits[key]))
                        done.set()
                    run.scrapes_a.append(await a.scrape())
                    run.scrapes_b.append(await b.scrape())
            nursery.cancel_scope.cancel()

    # Both paths carried traffic, in alternation.
    assert [p[0] for p in run.phases] == ["port", "header", "port", "header", "port", "header"]
    assert b_router.hits["local"] >= 3
    assert b_router.hits["direct"] >= 3
    assert len(run.scrapes_a) >= SWITCHES and len(run.scrapes_b) >= SWITCHES
    ok = run.statuses.count(200)
    assert ok >= 0.9 * len(run.statuses), run.statuses

    # The acceptance: no scrape of either proxy ever has a line twice.
    for scrape in run.scrapes_a + run.scrapes_b:
        assert scrape.duplicates() == []

    final_a, final_b = run.scrapes_a[-1], run.scrapes_b[-1]
    # A: one series per endpoint form (they render different target_addr)...
    a_series = list(final_a.find("request_total", direction="outbound", authority=NAME))
    assert {s.labels["target_addr"] for s in a_series} == {f"127.0.0.2:{port}", str(app)}
    assert all(s.labels["server_id"] == B_ID for s in a_series)
    # ... and its counts only ever grow, series by series (one line per label set).
    previous: dict[str, float] = {}
    for scrape in run.scrapes_a:
        for s in scrape.find("request_total", direction="outbound", authority=NAME):
            assert s.value >= previous.get(s.line.rsplit(" ", 1)[0], 0)
            previous[s.line.rsplit(" ", 1)[0]] = s.value
    assert sum(s.value for s in a_series) == len(run.statuses)
    # B: both paths render the same inbound labels, so they are one series.
    b_series = list(final_b.find("request_total", direction="inbound", client_id=A_ID))
    assert len(b_series) == 1, [s.line for s in b_series]
    assert b_series[0].labels["target_addr"] == str(app)
    assert b_series[0].labels["tls"] == "true"
    assert b_series[0].value == ok
    accepted = list(final_b.find("tcp_open_total", direction="inbound", peer="src", tls="true"))
    assert len(accepted) == 1
    assert accepted[0].value == b_router.hits["local"] + b_router.hits["direct"]
    assert str(LOCALHOST) in accepted[0].labels["target_addr"]
