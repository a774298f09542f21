"""PipeBody back-pressure, end, trailers, failure and abandonment."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkerd_proxy.http.body import BodyAbandoned, BytesBody, EmptyBody, PipeBody, StreamReset


async def test_send_waits_while_full_and_resumes_as_the_reader_reads() -> None:
    body = PipeBody(limit=10)
    await body.send(b"0123456789")
    sent = trio.Event()

    async def producer() -> None:
        await body.send(b"abc")
        sent.set()
        body.finish([(b"grpc-status", b"0")])

    async with trio.open_nursery() as n:
        n.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()  # held back: the body is full
        assert await body.read() == b"0123456789"
        assert await body.read() == b"abc"
        assert await body.read() == b""
    assert body.trailers == [(b"grpc-status", b"0")]


async def test_on_consumed_reports_each_chunk() -> None:
    taken: list[int] = []
    body = PipeBody(on_consumed=taken.append)
    body.push(b"ab")
    body.push(b"cde")
    body.finish()
    assert await body.read_all(100) == b"abcde"
    assert taken == [2, 3]


async def test_fail_raises_to_the_reader() -> None:
    body = PipeBody()
    body.push(b"x")
    body.fail(StreamReset(8))
    assert await body.read() == b"x"
    with pytest.raises(StreamReset) as info:
        await body.read()
    assert info.value.code == 8


async def test_abandon_unblocks_and_fails_the_producer() -> None:
    body = PipeBody(limit=1)
    body.push(b"full")

    async def producer() -> None:
        with pytest.raises(BodyAbandoned):
            await body.send(b"more")

    async with trio.open_nursery() as n:
        n.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        await body.aclose()
    assert body.abandoned


async def test_read_all_enforces_the_limit() -> None:
    body = PipeBody()
    body.push(b"0123456789")
    body.finish()
    with pytest.raises(Exception, match="longer than 5"):
        await body.read_all(5)


async def test_fixed_bodies() -> None:
    assert EmptyBody().is_end_stream
    assert await EmptyBody().read() == b""
    b = BytesBody(b"hi", trailers=[(b"a", b"1")])
    assert b.content_length == 2
    assert await b.read() == b"hi"
    assert await b.read() == b""
    assert b.trailers == [(b"a", b"1")]
