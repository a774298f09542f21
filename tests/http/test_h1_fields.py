"""Tests for the one-pass header helpers of ``linkerd_proxy.http.h1.codec`` and the
memoized classification labels (the HTTP/1 hot path)."""

from __future__ import annotations

from linkerd_proxy.http.classify import Class, Classify
from linkerd_proxy.http.h1.codec import (
    H1ServerCodec,
    RequestHead,
    index_fields,
    lower_connection_tokens,
    lower_strip_hop_by_hop,
)
from linkerd_proxy.http.metrics_layer import class_labels
from linkerd_proxy.metrics.http import Classification, HttpClassLabels


def test_index_fields_groups_values_in_order() -> None:
    fields = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert index_fields(fields) == {b"a": [b"1", b"3"], b"b": [b"2"]}


def test_request_head_values_from_the_codec() -> None:
    codec = H1ServerCodec()
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    head = next(e for e in codec.feed(raw) if isinstance(e, RequestHead))
    assert head.values(b"host") == [b"x"]
    assert head.values(b"te") == [b"trailers"]
    assert head.values(b"x-a") == [b"1", b"2"]
    assert head.values(b"content-length") == []


def test_lower_connection_helpers() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Private ,upgrade"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"x-kept", b"2"),
    ]
    assert lower_connection_tokens(headers) == {b"keep-alive", b"x-private", b"upgrade"}
    assert lower_connection_tokens([(b"host", b"a")]) == frozenset()
    assert lower_strip_hop_by_hop(headers) == [(b"host", b"a"), (b"x-kept", b"2")]
    assert lower_strip_hop_by_hop(iter([(b"te", b"x"), (b"a", b"b")])) == [(b"a", b"b")]


def test_classify_shared_outcomes_still_classify_by_status() -> None:
    http = Classify.for_request([(b"content-type", b"text/plain")])
    grpc = Classify.for_request([(b"content-type", b"application/grpc")])
    assert not http.grpc and grpc.grpc
    assert http.classify(200, []) == Class(failure=False)
    assert http.classify(503, []) == Class(failure=True)
    assert http.classify(499, []) == Class(failure=False)
    custom = Classify(http_failure_ranges=((400, 499),))
    assert custom.classify(404, []) == Class(failure=True)
    assert custom.classify(500, []) == Class(failure=False)


def test_class_labels_memo_returns_equal_labels() -> None:
    failure = class_labels(Class(failure=True, error="x"))
    assert failure == HttpClassLabels(Classification.FAILURE, None, "x")
    assert class_labels(Class(failure=True, error="x")) is failure
    assert class_labels(Class(failure=False, grpc_status=5)) == HttpClassLabels(
        Classification.SUCCESS, 5, ""
    )
