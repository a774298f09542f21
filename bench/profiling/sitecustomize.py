"""cProfile inside a running proxy, for ``python -m bench.profile --tool cprofile``.

Only on ``PYTHONPATH`` for a profiling run (never on the proxy's default path).
With ``LP_CPROFILE=<file>`` set, ``SIGUSR1`` starts the profiler and ``SIGUSR2``
stops it and writes the stats to that file. Both take effect at the trio loop's
next wait for I/O (a trio instrument), so the profiler is switched on the loop's
own thread, between tasks.
"""

from __future__ import annotations

import os

_OUT = os.environ.get("LP_CPROFILE")

if _OUT:
    import cProfile
    import signal
    from typing import Any

    import trio

    _profiler = cProfile.Profile()
    _wanted: list[str] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        _wanted.append("start" if signum == signal.SIGUSR1 else "stop")

    signal.signal(signal.SIGUSR1, _on_signal)
    signal.signal(signal.SIGUSR2, _on_signal)

    class _Switch(trio.abc.Instrument):
        def before_io_wait(self, timeout: float) -> None:
            while _wanted:
                what = _wanted.pop(0)
                if what == "start":
                    _profiler.enable()
                else:
                    _profiler.disable()
                    _profiler.dump_stats(str(_OUT))

    _run = trio.run

    def _run_profiled(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), _Switch()]
        return _run(*args, **kwargs)

    trio.run = _run_profiled  # type: ignore[assignment]
