"""h2load (nghttp2) through a tiny proxy: the drivers under a real HTTP/2 load tool."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import trio

from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.model import Request, Response

from .test_h2_support import serve_in_process, tiny_proxy


def _h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        if os.environ.get("LINKERD_PROXY_REQUIRE_SYSTEM_TESTS") == "1":
            pytest.fail("h2load is required (apt-get install nghttp2-client)")
        pytest.skip("h2load not installed")
    return path


async def hello(req: Request) -> Response:
    await req.body.aclose()
    return Response(200, [(b"content-type", b"text/plain")], BytesBody(b"hello world\n"))


async def test_h2load_through_the_proxy() -> None:
    h2load = _h2load()
    async with serve_in_process(hello) as upstream, tiny_proxy(upstream) as port:
        with trio.fail_after(30):
            result = await trio.run_process(
                [h2load, "-n", "1000", "-c", "10", "-m", "10", f"http://127.0.0.1:{port}/"],
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
            )
    out = result.stdout.decode()
    assert result.returncode == 0, out
    match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert match is not None, out
    assert match.groups() == ("1000", "1000", "1000"), out
    assert re.search(r"status codes: 1000 2xx", out), out
