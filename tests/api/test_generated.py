"""The committed ``linkerd_proxy/api`` code is exactly what ``scripts/gen_api.py`` makes.

The generator comparison skips (with the reason) unless the pinned dev tools
are installed: ``pip install -e '.[dev]'``. The other tests need only the
runtime.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import linkerd_proxy.api as api

ROOT = Path(__file__).resolve().parent.parent.parent
API_DIR = ROOT / "linkerd_proxy" / "api"


def load_script() -> ModuleType:
    name = "linkerd_proxy_gen_api"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen_api = load_script()


def fresh_generation(tmp_path: Path) -> Path:
    try:
        gen_api.check_tools()
    except gen_api.GeneratorUnavailable as exc:
        pytest.skip(f"generator not installed at its pinned versions: {exc}")
    out = tmp_path / "fresh"
    out.mkdir()
    gen_api.generate(out)
    return out


def test_committed_code_is_what_the_script_generates(tmp_path: Path) -> None:
    fresh = fresh_generation(tmp_path)
    assert len(gen_api.generated_files(fresh)) >= 20
    assert gen_api.differences(fresh, API_DIR) == [], "run: python scripts/gen_api.py"


def test_comparison_notices_edits_stale_and_missing_files(tmp_path: Path) -> None:
    fresh = fresh_generation(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    gen_api.write(fresh, copy)
    assert gen_api.differences(fresh, copy) == []

    dest = copy / "io" / "linkerd" / "proxy" / "destination" / "__init__.py"
    dest.write_text(dest.read_text().replace("betterproto2.field(3,", "betterproto2.field(2,", 1))
    (copy / "io" / "linkerd" / "proxy" / "removed.py").write_text("")
    (copy / "message_pool.py").unlink()
    assert gen_api.differences(fresh, copy) == [
        "missing: message_pool.py",
        "stale: io/linkerd/proxy/removed.py",
        "differs: io/linkerd/proxy/destination/__init__.py",
    ]

    # A rewrite restores it and removes what is no longer generated.
    gen_api.write(fresh, copy)
    assert gen_api.differences(fresh, copy) == []


def test_write_keeps_the_hand_written_init(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    (fresh / "io" / "x").mkdir(parents=True)
    (fresh / "io" / "x" / "__init__.py").write_text("new\n")
    target = tmp_path / "target"
    (target / "old" / "pkg").mkdir(parents=True)
    (target / "old" / "pkg" / "m.py").write_text("old\n")
    (target / "__init__.py").write_text("ours\n")
    gen_api.write(fresh, target)
    assert (target / "__init__.py").read_text() == "ours\n"
    assert not (target / "old").exists()
    assert (target / "io" / "x" / "__init__.py").read_text() == "new\n"


def test_pins_agree_everywhere() -> None:
    # The script, the package docstring's table and the [dev] extra.
    assert gen_api.PINNED == api.GENERATED_WITH
    for name, version in api.GENERATED_WITH.items():
        assert f"{name} {version}" in (api.__doc__ or "")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    for name, version in gen_api.PINNED.items():
        if name != "betterproto2":  # the runtime: a range in dependencies
            assert f"{name}=={version}" in dev
    major_minor = ".".join(gen_api.PINNED["betterproto2"].split(".")[:2])
    assert any(
        d.startswith("betterproto2") and f">={major_minor}" in d for d in project["dependencies"]
    )


def test_generated_code_records_the_pinned_compiler() -> None:
    text = (API_DIR / "io" / "linkerd" / "proxy" / "destination" / "__init__.py").read_text()
    assert f'_COMPILER_VERSION = "{api.GENERATED_WITH["betterproto2-compiler"]}"' in text


_BLOCK_DEV_TOOLS = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc_tools", "betterproto2_compiler", "google"):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import linkerd_proxy.api as api
assert "grpclib" not in sys.modules, "importing the package must not load the stubs"
header = api.transport_header.Header(port=4143)
assert "grpclib" not in sys.modules, "message-only modules must not load the stubs"
for name in api.__all__:
    getattr(api, name)
print(bytes(header).hex(), api.destination.DestinationStub.__name__)
"""


def test_runtime_needs_no_generator_or_protobuf() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_DEV_TOOLS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["08af20", "DestinationStub"]


def test_lazy_names() -> None:
    assert set(api.__all__) <= set(dir(api))
    assert api.tap.TapStub.__name__ == "TapStub"
    assert api.identity.IdentityBase.__name__ == "IdentityBase"
    with pytest.raises(AttributeError, match="no_such_api"):
        _ = api.no_such_api  # type: ignore[attr-defined]
