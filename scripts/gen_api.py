"""Regenerate ``linkerd_proxy/api/`` from ``proto/`` with betterproto2 (dev only).

Usage::

    python scripts/gen_api.py           # rewrite the committed generated code
    python scripts/gen_api.py --check   # exit 1 if it differs from a fresh run

The generated code is committed, so the proxy never needs these tools at run
time. Output is reproducible only with the exact tool versions in ``PINNED``
(the compiler formats its output with whatever ``ruff`` it finds, and embeds its
own version), so the script refuses to run with any other versions; the
``[dev]`` extra in pyproject.toml installs exactly these.

Everything in ``linkerd_proxy/api/`` except the hand-written ``__init__.py`` is
generated: a regeneration deletes the rest and writes it anew.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
API_DIR = ROOT / "linkerd_proxy" / "api"

# Keep in step with GENERATED_WITH in linkerd_proxy/api/__init__.py and with
# the [dev] extra in pyproject.toml (a test checks all three agree).
PINNED: dict[str, str] = {
    "betterproto2-compiler": "0.10.1",
    "betterproto2": "0.10.0",
    "grpcio-tools": "1.85.1",
    "ruff": "0.17.6",
}

PLUGIN_NAME = "protoc-gen-python_betterproto2"
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"

# The formatter settings the compiler's ruff calls see (it runs ruff with the
# generator's working directory, so this file, not the repo's, applies).
RUFF_TOML = 'line-length = 100\ntarget-version = "py311"\n'

# Written by the plugin at the output root; we replace it with our own module.
HAND_WRITTEN = "__init__.py"


class GeneratorUnavailable(Exception):
    """The pinned generator tools are missing or at other versions."""


def _tool_bin_dir() -> Path:
    return Path(sys.executable).parent


def _tool_env() -> dict[str, str]:
    # The plugin and ruff must be the ones installed next to this interpreter.
    env = dict(os.environ)
    env["PATH"] = f"{_tool_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def installed_versions() -> dict[str, str | None]:
    """Return the installed version of each pinned tool (None when absent)."""
    found: dict[str, str | None] = {}
    for name in PINNED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    ruff = shutil.which("ruff", path=_tool_env()["PATH"])
    if ruff is None:
        found["ruff"] = None
    else:
        out = subprocess.run([ruff, "--version"], capture_output=True, text=True, check=False)
        found["ruff"] = out.stdout.split()[-1] if out.returncode == 0 and out.stdout else None
    return found


def check_tools() -> None:
    """Raise GeneratorUnavailable unless every pinned tool is installed at its pin."""
    found = installed_versions()
    wrong = [
        f"{name}=={want} (found {found[name] or 'nothing'})"
        for name, want in PINNED.items()
        if found[name] != want
    ]
    if wrong:
        raise GeneratorUnavailable(
            "the API generator needs "
            + ", ".join(wrong)
            + "; install with: pip install -e '.[dev]'"
        )
    if shutil.which(PLUGIN_NAME, path=_tool_env()["PATH"]) is None:
        raise GeneratorUnavailable(f"{PLUGIN_NAME} is not on PATH next to {sys.executable}")


def proto_files() -> list[str]:
    """The .proto files to compile, relative to proto/, in a stable order."""
    return sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Compile every file in proto/ into ``out_dir`` (which must exist and be empty).

    The plugin's own root ``__init__.py`` is dropped (it must be empty); the
    rest is exactly what goes under ``linkerd_proxy/api/``.

    Raises:
      GeneratorUnavailable: the pinned tools are not installed.
      RuntimeError: protoc or the plugin failed.
    """
    check_tools()
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise GeneratorUnavailable("grpc_tools cannot be imported")
    well_known = Path(spec.origin).parent / "_proto"  # google/protobuf/*.proto
    plugin = shutil.which(PLUGIN_NAME, path=_tool_env()["PATH"])
    with tempfile.TemporaryDirectory(prefix="gen-api-cwd-") as cwd:
        Path(cwd, "ruff.toml").write_text(RUFF_TOML)
        cmd = [
            sys.executable,
            "-c",
            "import sys; from grpc_tools import protoc; sys.exit(protoc.main(sys.argv))",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--plugin={PLUGIN_NAME}={plugin}",
            f"--python_betterproto2_out={out_dir}",
            f"--python_betterproto2_opt={PLUGIN_OPTIONS}",
            *proto_files(),
        ]
        done = subprocess.run(cmd, cwd=cwd, env=_tool_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed ({done.returncode}):\n{done.stderr}")
    root_init = out_dir / HAND_WRITTEN
    if root_init.exists():
        if root_init.read_text().strip():
            raise RuntimeError("the plugin wrote a non-empty root __init__.py")
        root_init.unlink()


def generated_files(directory: Path) -> list[str]:
    """The generated files under ``directory`` (relative paths, sorted)."""
    files = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if rel.as_posix() == HAND_WRITTEN:
            continue
        files.append(rel.as_posix())
    return sorted(files)


def differences(fresh: Path, committed: Path) -> list[str]:
    """Describe how ``committed`` differs from a fresh generation (empty if equal)."""
    new, old = set(generated_files(fresh)), set(generated_files(committed))
    out = [f"missing: {p}" for p in sorted(new - old)]
    out += [f"stale: {p}" for p in sorted(old - new)]
    out += [
        f"differs: {p}"
        for p in sorted(new & old)
        if not filecmp.cmp(fresh / p, committed / p, shallow=False)
    ]
    return out


def write(fresh: Path, target: Path) -> None:
    """Replace every generated file under ``target`` with those in ``fresh``."""
    for rel in generated_files(target):
        (target / rel).unlink()
    for path in sorted(target.rglob("*"), reverse=True):  # now-empty dirs, deepest first
        if path.is_dir() and not any(p.name != "__pycache__" for p in path.iterdir()):
            shutil.rmtree(path)
    for rel in generated_files(fresh):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh / rel, target / rel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed code")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="gen-api-") as tmp:
            fresh = Path(tmp)
            generate(fresh)
            diff = differences(fresh, API_DIR)
            if args.check:
                for line in diff:
                    print(line, file=sys.stderr)
                if diff:
                    print("run: python scripts/gen_api.py", file=sys.stderr)
                return 1 if diff else 0
            write(fresh, API_DIR)
    except GeneratorUnavailable as exc:
        print(f"gen_api: {exc}", file=sys.stderr)
        return 2
    print(f"gen_api: {len(diff)} file(s) changed under {API_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
