"""What the outbound proxy needs from the control plane (when one is configured)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from linkerd_proxy.identity.store import IdentityStore
from linkerd_proxy.outbound.logical import Discoveries

if TYPE_CHECKING:
    from linkerd_proxy.grpc.client import ControlClient


@attrs.frozen
class OutboundControl:
    """The outbound proxy's discovery state.

    Attributes:
        discoveries: per original destination (profile + policy watches).
        destination: the Destination service client (``None``: no ``Get``).
        context_token: ``DESTINATION_CONTEXT``.
        identity: this proxy's identity (mTLS to meshed endpoints), if any.
    """

    discoveries: Discoveries
    destination: ControlClient | None
    context_token: str = ""
    #: This proxy's identity: endpoints with an identity get mTLS.
    identity: IdentityStore | None = None
