"""Inbound default policies (``LINKERD2_PROXY_INBOUND_DEFAULT_POLICY``): who may connect.

Without a policy controller (or for ports it has no server for), the reference
synthesizes a server from the default policy. Its authorization, as a pure check on
the client's address and mTLS identity:

- ``all-unauthenticated``: everyone;
- ``all-authenticated``: clients with an mTLS identity;
- ``cluster-unauthenticated``: clients in ``POLICY_CLUSTER_NETWORKS``;
- ``cluster-authenticated``: clients in the cluster networks with an mTLS identity;
- ``deny``: no one;
- ``audit``: everyone, but each connection is logged as it would have been denied.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from linkerd_proxy.addrs import IpAddr

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def authorized(
    policy: str,
    client_ip: IpAddr,
    client_id: str | None,
    cluster_networks: Iterable[IpNetwork],
) -> bool:
    """Whether ``policy`` lets this client in (``audit`` always does).

    Raises:
        ValueError: an unknown policy name (the configuration parser rejects those).
    """
    if policy in ("all-unauthenticated", "audit"):
        return True
    if policy == "deny":
        return False
    if policy == "all-authenticated":
        return client_id is not None
    in_cluster = any(client_ip in net for net in cluster_networks)
    if policy == "cluster-unauthenticated":
        return in_cluster
    if policy == "cluster-authenticated":
        return in_cluster and client_id is not None
    raise ValueError(f"unknown default policy: {policy!r}")
