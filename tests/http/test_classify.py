"""Tests for linkerd_proxy.http.classify (the reference's default classification)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkerd_proxy.errors import ConnectError, ResponseTimeout
from linkerd_proxy.http.body import StreamReset
from linkerd_proxy.http.classify import Class, Classify, classify_error, grpc_code, is_grpc

GRPC_REQ = [(b"content-type", b"application/grpc+proto")]
FAILING = {2, 4, 7, 13, 14, 15}


@pytest.mark.parametrize(
    ("status", "failure"), [(200, False), (400, False), (404, False), (499, False), (500, True),
                            (503, True), (599, True), (600, False)]
)  # fmt: skip
def test_http_status(status: int, failure: bool) -> None:
    assert Classify.for_request([]).classify(status, []) == Class(failure=failure)


def test_grpc_is_decided_by_the_request() -> None:
    assert is_grpc(GRPC_REQ)
    assert is_grpc([(b"content-type", b"application/grpc")])
    assert not is_grpc([(b"content-type", b"application/json")])
    assert not is_grpc([])
    # A non-gRPC request ignores grpc-status.
    assert Classify.for_request([]).classify(200, [(b"grpc-status", b"14")]) == Class(False)


@pytest.mark.parametrize("code", range(17))
def test_grpc_status_in_headers(code: int) -> None:
    got = Classify.for_request(GRPC_REQ).classify(200, [(b"grpc-status", str(code).encode())])
    assert got == Class(failure=code in FAILING, grpc_status=code)


@pytest.mark.parametrize("code", range(17))
def test_grpc_status_in_trailers(code: int) -> None:
    eos = Classify.for_request(GRPC_REQ).start(200, [(b"content-type", b"application/grpc")])
    got = eos.eos([(b"grpc-status", str(code).encode()), (b"grpc-message", b"x")])
    assert got == Class(failure=code in FAILING, grpc_status=code)


def test_grpc_headers_win_over_trailers_and_5xx() -> None:
    eos = Classify.for_request(GRPC_REQ).start(500, [(b"grpc-status", b"0")])
    assert eos.eos([(b"grpc-status", b"14")]) == Class(False, 0)


def test_grpc_without_status_is_the_references_unknown_success() -> None:
    eos = Classify.for_request(GRPC_REQ).start(200, [])
    assert eos.eos(None) == Class(failure=False, grpc_status=2)
    assert eos.eos([(b"other", b"1")]) == Class(failure=False, grpc_status=2)


def test_grpc_code_parsing() -> None:
    assert grpc_code([(b"grpc-status", b"99")]) == 2  # not a code: Unknown
    assert grpc_code([(b"grpc-status", b"abc")]) is None
    assert grpc_code([(b"grpc-status", b"-1")]) is None
    assert grpc_code([(b"grpc-status", b"70000")]) is None
    assert grpc_code(None) is None


@given(st.binary(max_size=8))
def test_grpc_code_never_crashes(value: bytes) -> None:
    code = grpc_code([(b"grpc-status", value)])
    assert code is None or 0 <= code <= 16


def test_errors() -> None:
    assert classify_error(ResponseTimeout(1.0)) == Class(True, error="timeout")
    assert classify_error(StreamReset(1)) == Class(True, error="h2(PROTOCOL_ERROR)")
    assert classify_error(StreamReset(8)) == Class(True, error="h2(CANCEL)")
    assert classify_error(StreamReset(99)) == Class(True, error="h2(Reason(99))")
    assert classify_error(ConnectError("x", "refused")) == Class(True, error="unclassified")
    eos = Classify.for_request(GRPC_REQ).start(200, [])
    assert eos.error(StreamReset(2)) == Class(True, error="h2(INTERNAL_ERROR)")
