"""asyncio stays inside the bridge; the status codes stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import linkerd_proxy

PACKAGE = Path(linkerd_proxy.__file__).parent
ASYNCIO_WORLD = {"asyncio", "trio_asyncio", "grpclib"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_bridge_imports_asyncio() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        # The generated API's gRPC stubs are grpclib's; nothing runs them but the bridge.
        if (
            relative == "grpc/bridge.py"
            or relative.startswith("api/")
            # The fake control plane runs grpclib servers on the asyncio side.
            or relative.startswith("testing/control")
        ):
            continue
        if imported_roots(path) & ASYNCIO_WORLD:
            offenders.append(relative)
    assert offenders == []


def test_status_codes_are_pure() -> None:
    assert imported_roots(PACKAGE / "grpc" / "status.py") <= {"__future__", "enum"}
