"""The proxy's error hierarchy, one flat module.

I/O code maps OS and library exceptions onto these at the boundary, so that upper
layers (metrics, synthetic responses) classify errors without knowing where they
came from.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error the proxy raises on purpose."""


class ConfigError(ProxyError):
    """An invalid ``LINKERD2_PROXY_*`` value.

    ``str()`` is the message the binary prints before exiting 64:
    ``Invalid configuration: <VAR>=<value>: <why>``.
    """

    def __init__(self, var: str, value: str, reason: str) -> None:
        super().__init__(var, value, reason)
        self.var = var
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"Invalid configuration: {self.var}={self.value}: {self.reason}"


class ConnectError(ProxyError):
    """Connecting to an endpoint failed; ``errno`` is set when the OS gave one."""

    def __init__(self, addr: object, reason: str, errno: int | None = None) -> None:
        super().__init__(f"connect to {addr} failed: {reason}")
        self.addr = addr
        self.errno = errno


class ConnectTimeout(ConnectError):
    """Connecting did not finish within the connect timeout."""


class OrigDstError(ProxyError):
    """The original destination of an accepted connection could not be read."""


class ForbiddenOrigDst(ProxyError):
    """Inbound: the original destination is not one of ``INBOUND_IPS``."""


class LoopDetected(ProxyError):
    """A connection would be forwarded to the proxy's own listener."""


class ResponseTimeout(ProxyError):
    """A timeout layer fired before the inner service answered.

    ``timeout`` is the bound in seconds that expired, when known.
    """

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(
            "response timed out" if timeout is None else f"response timed out after {timeout}s"
        )
        self.timeout = timeout


class FailFast(ProxyError):
    """A service stayed unready for its failfast timeout (synthesized as 504)."""

    def __init__(self, message: str = "service in fail-fast") -> None:
        super().__init__(message)


class LoadShed(ProxyError):
    """A request was refused because the proxy is at capacity (synthesized as 503)."""

    def __init__(self, message: str = "service unavailable") -> None:
        super().__init__(message)


class NoRoute(ProxyError):
    """No route matched the request (synthesized as 404)."""

    def __init__(self, message: str = "no route found for request") -> None:
        super().__init__(message)


class IdentityRequired(ProxyError):
    """The endpoint's identity is not the one ``l5d-require-id`` asked for (502)."""


class NoAuthority(ProxyError):
    """An HTTP/1 request had no authority (no absolute URI, no Host, no default)."""

    def __init__(
        self, message: str = "failed to normalize URI because no authority could be determined"
    ) -> None:
        super().__init__(message)


class DowngradedH2Error(ProxyError):
    """An orig-proto upgraded request was reset by the peer proxy (synthesized as 502).

    ``code`` is the HTTP/2 error code of the reset.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"upgraded connection failed with HTTP/2 reset: {reason or code}")
        self.code = code


class H1ProtocolError(ProxyError):
    """An HTTP/1 peer sent something that is not acceptable HTTP/1 (a malformed or
    oversized response head, a body cut short)."""


class H1ConnectionClosed(ProxyError):
    """An upstream HTTP/1 connection closed before any byte of the response came.

    ``retryable`` is true when the request can safely be sent again on another
    connection (nothing of it was lost: its body was never read).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class H2ConnectionError(ProxyError):
    """An HTTP/2 connection failed or closed while a request was in flight on it."""


class H2ProtocolError(H2ConnectionError):
    """The HTTP/2 peer broke the protocol (a malformed message or frame)."""


class H2Refused(ProxyError):
    """An HTTP/2 request that the server did not process: safe to retry elsewhere.

    Raised for requests above a GOAWAY's last stream id, streams reset with
    REFUSED_STREAM, and requests offered to a connection that no longer takes any.
    """


class GrpcError(ProxyError):
    """A gRPC call ended with a non-OK status (from the server, or mapped locally).

    ``status`` is the wire number of the code (see ``linkerd_proxy.grpc.status.Code``);
    transport failures (refused, reset, lost connection) are mapped to UNAVAILABLE
    and undecodable messages to INTERNAL at the gRPC bridge.
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        text = f"grpc-status {self.status}"
        return f"{text}: {self.message}" if self.message else text


class DnsError(ProxyError):
    """A control-plane name did not resolve (or resolved to no address).

    ``negative_ttl`` is how long, in seconds, to wait before asking again.
    """

    def __init__(self, name: str, reason: str, negative_ttl: float) -> None:
        super().__init__(f"failed to resolve {name}: {reason}")
        self.name = name
        self.reason = reason
        self.negative_ttl = negative_ttl


class ControlTlsRequired(ProxyError):
    """A control-plane client for a non-loopback address was built without TLS.

    Plaintext is allowed only to loopback addresses (a loopback IP or ``localhost.``).
    """

    def __init__(self, addr: object) -> None:
        super().__init__(
            f"control-plane address {addr} is not loopback: "
            "a TLS context is required (plaintext is allowed only to loopback)"
        )
        self.addr = addr


class DiscoveryRejected(ProxyError):
    """The control plane refused a discovery lookup for good (INVALID_ARGUMENT or
    FAILED_PRECONDITION): the caller falls back (no profile, forward to the
    original destination, or fail the connection) instead of asking again.

    ``target`` is what was looked up; ``status`` the gRPC code's wire number.
    """

    def __init__(self, target: str, status: int, message: str = "") -> None:
        super().__init__(f"discovery rejected lookup of {target}: grpc-status {status} {message}")
        self.target = target
        self.status = status
        self.message = message


class PolicyNotFound(ProxyError):
    """The policy controller has no policy for a target (NOT_FOUND or UNIMPLEMENTED):
    the caller synthesizes a default policy."""

    def __init__(self, target: str, status: int) -> None:
        super().__init__(f"no policy for {target} (grpc-status {status})")
        self.target = target
        self.status = status


class BackendFailed(ProxyError):
    """A policy ``Fail`` backend: every request to it fails (502)."""


class InvalidIdentityCertificate(ProxyError):
    """A certificate from the identity service was refused (already expired, a chain
    that does not verify to the trust anchors, the local identity missing from the
    leaf's SANs, or a leaf that does not match the proxy's key); the current
    certificate, if any, stays in use."""


class PeerIdentityMismatch(ProxyError):
    """A TLS peer proved an identity other than the expected one (or none at all).

    ``expected`` is the identity asked for; ``actual`` the DNS/URI SANs of the
    peer's leaf certificate.
    """

    def __init__(self, expected: str, actual: tuple[str, ...]) -> None:
        shown = ", ".join(actual) if actual else "no identity"
        super().__init__(f"peer identity {shown} does not match expected {expected}")
        self.expected = expected
        self.actual = actual


class TransportHeaderError(ProxyError):
    """A transport header (``transport.l5d.io/v1``) is malformed: too long, not valid
    protobuf, a port outside 1..65535, or a name that is not a DNS name."""


class IdentityFilesError(ProxyError):
    """The identity directory or trust anchors are unusable: a missing directory or
    file, an empty file, or contents that are not the expected format."""


class CertificateVerifyError(ProxyError):
    """A certificate chain does not prove an identity: it does not verify to the
    trust anchors, is outside its validity period, or the leaf's DNS/URI SANs do
    not include the identity."""


class Unauthorized(ProxyError):
    """The inbound policy does not authorize the client (HTTP 403, TCP closed)."""
