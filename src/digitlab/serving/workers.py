"""Run a server in several processes that share one listening socket, as `uvicorn --workers` does.

The parent binds the socket and starts `count` worker processes ("spawn": a fresh interpreter each,
so no thread or OpenMP state of the parent is copied), each accepting connections on the same socket
(the kernel hands each new connection to one of them). The parent only watches: a worker that dies
is replaced; workers that keep dying stop the whole server with a ServeError; Ctrl-C or SIGTERM
stops every worker gracefully, and a worker whose parent is killed outright stops too (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable

from ..errors import ServeError

RESTART_WINDOW_S = 30.0  # more than `count` deaths within this many seconds means the workers cannot run
STOP_TIMEOUT_S = 10.0  # a worker still running this long after SIGTERM is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Stop(Exception):
    pass


def run_workers(count: int, target: Callable, args: tuple, poll_s: float = 0.2) -> None:
    """Run target(*args) in `count` processes until Ctrl-C or SIGTERM; replace any that dies (see the module)."""
    if count < 1:
        raise ServeError(f"workers must be at least 1, got {count}")
    context = multiprocessing.get_context("spawn")
    start = lambda: context.Process(target=_worker, args=(target, args), daemon=True)  # noqa: E731
    workers = [start() for _ in range(count)]
    deaths: list[float] = []  # when workers died, within the restart window
    for worker in workers:
        worker.start()
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        while True:
            time.sleep(poll_s)
            for number, worker in enumerate(workers):
                if worker.is_alive():
                    continue
                deaths = [moment for moment in deaths if time.monotonic() - moment < RESTART_WINDOW_S]
                deaths.append(time.monotonic())
                if len(deaths) > count:
                    raise ServeError(
                        f"server workers keep exiting ({len(deaths)} in {RESTART_WINDOW_S:.0f} s, "
                        f"the last with code {worker.exitcode}); see the messages above"
                    )
                print(f"worker {worker.pid} exited with code {worker.exitcode}; starting another", file=sys.stderr)
                workers[number] = start()
                workers[number].start()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(workers)


def _raise_stop(signum, frame):
    raise _Stop()


def _stop(workers: list) -> None:
    """SIGTERM every worker (a graceful shutdown), wait, and kill the ones that are still there."""
    for worker in workers:
        if worker.is_alive():
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()


def _worker(target: Callable, args: tuple) -> None:
    """A worker process: die with the parent, then run the target; Ctrl-C is a normal stop."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    with contextlib.suppress(KeyboardInterrupt):
        target(*args)
