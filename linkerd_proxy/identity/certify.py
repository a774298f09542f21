"""The Certify loop: obtain the proxy's certificate and keep it fresh.

Part of the identity client (``identity/``). Above the control-plane client
(``grpc.client.ControlClient``, one unary ``Identity.Certify`` call per attempt)
and beside the :class:`~linkerd_proxy.identity.store.IdentityStore`, where each
certificate is validated and installed; the app runs :func:`run_certify` as a
background task and serves meshed traffic once the readiness it is given is set.

Behaviour (SPEC section 6, the reference's ``identity-client``):

- Each attempt reads the token file afresh (a projected service-account token
  rotates), sends ``{identity, token, csr}``, and installs the response in the
  store, which rejects an expired certificate, a chain that does not verify to the
  trust anchors, a leaf without the local identity among its SANs, or a leaf that
  is not for the proxy's key.
- The first success makes the proxy ready.
- The next attempt comes after 70% of the current certificate's remaining
  lifetime, clamped to ``[min_refresh, max_refresh]``. After a failure the current
  certificate stays, and the delay is computed the same way from its expiry, so
  retries are spaced ever closer as the expiry nears but never closer than
  ``min_refresh``; with no certificate, or an expired one, the delay is
  ``min_refresh``.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import attrs
import trio

import linkerd_proxy.api as api
from linkerd_proxy.admin.state import Readiness
from linkerd_proxy.errors import GrpcError, InvalidIdentityCertificate, ProxyError
from linkerd_proxy.grpc.bridge import Codec
from linkerd_proxy.grpc.client import ControlClient
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.identity.metrics import IdentityMetrics
from linkerd_proxy.identity.store import Credentials, IdentityStore

log = logging.getLogger(__name__)

CERTIFY = "/io.linkerd.proxy.identity.Identity/Certify"

#: The codec of ``Identity.Certify`` calls.
CERTIFY_CODEC: Codec[api.identity.CertifyRequest, api.identity.CertifyResponse] = Codec(
    bytes, api.identity.CertifyResponse.parse
)

#: One ``Identity.Certify`` call: a request in, the response out.
#:
#: Raises ``GrpcError`` on failure.
Certifier = Callable[[api.identity.CertifyRequest], Awaitable[api.identity.CertifyResponse]]

#: The share of the remaining lifetime after which a certificate is refreshed.
REFRESH_SHARE = 0.7


@attrs.frozen
class CertifySettings:
    """What the loop needs besides the store.

    Attributes:
        token_file: ``IDENTITY_TOKEN_FILE``, read before every attempt.
        csr_der: the CSR from ``IDENTITY_DIR/csr.der``.
        min_refresh: ``IDENTITY_MIN_REFRESH``, seconds (the shortest wait between attempts).
        max_refresh: ``IDENTITY_MAX_REFRESH``, seconds.
        call_timeout: bound on one Certify call, seconds.
    """

    token_file: str
    csr_der: bytes
    min_refresh: float = 10.0
    max_refresh: float = 86400.0
    call_timeout: float = 10.0


def control_certifier(client: ControlClient, *, timeout: float | None = None) -> Certifier:
    """A :data:`Certifier` calling ``Identity.Certify`` through ``client``.

    Args:
        client: a control client for ``IDENTITY_SVC_ADDR``, built with
            :func:`~linkerd_proxy.identity.store.certify_client_context` and
            ``server_name=IDENTITY_SVC_NAME``.
        timeout: sent as the call's ``grpc-timeout``.
    """

    async def certify(request: api.identity.CertifyRequest) -> api.identity.CertifyResponse:
        return await client.unary(CERTIFY, request, CERTIFY_CODEC, grpc_timeout=timeout)

    return certify


def read_token(path: str) -> bytes:
    """The token file's bytes, read now.

    A small local file (a projected volume), read synchronously as the reference
    does; a thread hop would buy nothing.

    Raises:
        OSError: the file cannot be read, or is empty.
    """
    with open(path, "rb") as f:
        token = f.read()
    if not token:
        raise OSError(f"token file {path} is empty")
    return token


def refresh_delay(
    expiry: float | None, now: float, min_refresh: float, max_refresh: float
) -> float:
    """Seconds to wait before the next Certify attempt.

    Args:
        expiry: the current certificate's expiry (epoch seconds), ``None`` if none.
        now: the current time (epoch seconds).
        min_refresh: the lower bound.
        max_refresh: the upper bound.

    Returns:
        70% of the time left before ``expiry``, clamped to ``[min_refresh,
        max_refresh]``; ``min_refresh`` without a certificate or once it expired.
    """
    if expiry is None or expiry <= now:
        return min_refresh
    return min(max(REFRESH_SHARE * (expiry - now), min_refresh), max_refresh)


def _epoch(when: datetime.datetime) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


async def certify_once(
    certifier: Certifier, store: IdentityStore, settings: CertifySettings, now: Callable[[], float]
) -> Credentials:
    """One attempt: read the token, call Certify, validate and install the result.

    Args:
        certifier: makes the call.
        store: validates and holds the certificate.
        settings: the token file, CSR and call timeout.
        now: the wall clock (epoch seconds).

    Returns:
        The installed credentials.

    Raises:
        OSError: the token file cannot be read or is empty.
        GrpcError: the call failed (DEADLINE_EXCEEDED after ``call_timeout``).
        InvalidIdentityCertificate: the response was refused; the store keeps the
            certificate it had.
    """
    request = api.identity.CertifyRequest(
        identity=store.local_name,
        token=read_token(settings.token_file),
        certificate_signing_request=settings.csr_der,
    )
    with trio.move_on_after(settings.call_timeout):
        response = await certifier(request)
        if response.valid_until is None:
            raise InvalidIdentityCertificate("identity certification missing expiration")
        return store.set_certificate(
            response.leaf_certificate,
            response.intermediate_certificates,
            _epoch(response.valid_until),
            now=now(),
        )
    raise GrpcError(Code.DEADLINE_EXCEEDED, f"Certify timed out after {settings.call_timeout}s")


async def run_certify(
    certifier: Certifier,
    store: IdentityStore,
    settings: CertifySettings,
    *,
    readiness: Readiness | None = None,
    metrics: IdentityMetrics | None = None,
    wall_clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Certify now, then refresh for ever (run it in the app's background nursery).

    Args:
        certifier: one Certify call (see :func:`control_certifier`).
        store: where certificates are validated and installed.
        settings: token file, CSR, refresh bounds, call timeout.
        readiness: set ready after the first success.
        metrics: records each attempt (``control_identity_cert_*``).
        wall_clock: epoch seconds; certificate lifetimes are wall-clock time while
            the waits are trio sleeps (tests pair a ``MockClock`` with a matching
            wall clock).
        task_status: ``started()`` at once, before the first attempt.

    Cancellation: the only way it ends; a call in flight is cancelled with it.
    """
    task_status.started()
    while True:
        try:
            creds = await certify_once(certifier, store, settings, wall_clock)
        except (ProxyError, OSError) as exc:
            # GrpcError, InvalidIdentityCertificate, an unreadable token: keep the
            # current certificate and retry on its schedule.
            log.error("Failed to obtain identity: %s", exc)
            if metrics is not None:
                metrics.failed()
        else:
            now = wall_clock()
            log.debug("Identity certified as %s until %s", store.local_name, creds.expiry)
            if metrics is not None:
                metrics.certified(now=now, expiry=creds.expiry)
            if readiness is not None:
                readiness.set_ready()
        current = store.credentials
        delay = refresh_delay(
            current.expiry if current is not None else None,
            wall_clock(),
            settings.min_refresh,
            settings.max_refresh,
        )
        log.debug("Waiting %.3fs to refresh identity", delay)
        await trio.sleep(delay)


__all__ = [
    "CERTIFY",
    "CERTIFY_CODEC",
    "REFRESH_SHARE",
    "Certifier",
    "CertifySettings",
    "certify_once",
    "control_certifier",
    "read_token",
    "refresh_delay",
    "run_certify",
]
