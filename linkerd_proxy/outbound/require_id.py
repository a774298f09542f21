"""``l5d-require-id``: the application names the identity the endpoint must have.

Sits in the outbound HTTP stack per endpoint, above the endpoint's client (SPEC.md
section 6). The header is always removed before the request goes on. When it is
present, the endpoint's connection must be mTLS with exactly that server identity;
otherwise the request fails with :class:`~linkerd_proxy.errors.IdentityRequired`,
which the outbound error layer answers with 502. Pure: no I/O of its own.
"""

from __future__ import annotations

from linkerd_proxy.errors import IdentityRequired
from linkerd_proxy.http.model import Request, Response, remove_header
from linkerd_proxy.stack import Service

HEADER = b"l5d-require-id"


class RequireIdentity:
    """Enforce ``l5d-require-id`` for one endpoint.

    Args:
        inner: the endpoint's service.
        server_id: the identity its connections are mTLS with, or ``None`` when
            they are plaintext.
    """

    def __init__(self, inner: Service[Request, Response], server_id: str | None) -> None:
        self._inner = inner
        self.server_id = server_id

    async def __call__(self, req: Request, /) -> Response:
        """Check the header (removing it) and call the inner service.

        Raises:
            IdentityRequired: the header names another identity, or the endpoint
                is not mTLS.
        """
        values = remove_header(req.headers, HEADER)
        if values:
            required = values[0].decode("ascii", "replace").strip()
            if self.server_id is None:
                raise IdentityRequired(f"required id {required!r}; found no TLS identity")
            if required != self.server_id:
                raise IdentityRequired(f"required id {required!r}; found {self.server_id!r}")
        return await self._inner(req)
