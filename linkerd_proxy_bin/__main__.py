"""``linkerd-proxy``: read ``LINKERD2_PROXY_*``, run the proxy, exit.

``linkerd-proxy identity`` instead writes the key and CSR into
``LINKERD2_PROXY_IDENTITY_DIR`` if missing, then exits (the injector's
``proxy-identity`` step).

Exit codes: 0 after a shutdown (graceful or at the grace period, as the
reference), 64 for invalid configuration (``Invalid configuration: VAR=value:
why`` on stderr), 1 when initialisation fails (e.g. a port cannot be bound).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

# betterproto2 (the control-plane API's runtime) imports pydantic whenever it is
# installed, for pydantic dataclasses the proxy never uses: ~4 MiB of idle RSS in a
# meshed proxy. The binary owns its process and opts out; ``import linkerd_proxy``
# as a library leaves the host process alone.
if "pydantic" not in sys.modules:
    sys.modules["pydantic"] = None  # type: ignore[assignment]

import trio

from linkerd_proxy.app.config import Config
from linkerd_proxy.app.run import InitError, UnsupportedConfig, check_supported, run
from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.errors import ConfigError
from linkerd_proxy.log import LogLevelHandle, setup_logging

EX_CONFIG = 64
log = logging.getLogger("linkerd_proxy.app")

_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


async def _watch_signals(shutdown: Shutdown, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if not shutdown.is_triggered:
                name = _SIGNAL_NAMES.get(signal.Signals(signum), str(signum))
                log.info("received %s, starting shutdown", name)
                shutdown.trigger(name)


async def _main(config: Config, env: dict[str, str], log_level: LogLevelHandle) -> None:
    shutdown = Shutdown()
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, shutdown)
        await run(
            config,
            env=env,
            shutdown=shutdown,
            log_level=log_level if log_level.reloadable else None,
        )
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "identity":
        # The injector's proxy-identity step: prepare the key and CSR, then exit.
        from linkerd_proxy.tls.identity_files import main as identity_main

        sys.exit(identity_main(args[1:]))
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nConfiguration: LINKERD2_PROXY_* environment variables (docs/configuration.md).")
        return
    env = dict(os.environ)
    try:
        config = Config.from_env(env)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(EX_CONFIG)
    log_level = setup_logging(config.log.filter, config.log.format)
    try:
        check_supported(config)
    except UnsupportedConfig as exc:
        log.error("%s", exc)
        sys.exit(1)
    try:
        trio.run(_main, config, env, log_level)
    except* (OSError, InitError) as group:
        for error in group.exceptions:
            log.error("failed to initialize the proxy: %s", error)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
