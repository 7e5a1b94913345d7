"""`python -m worker [celery worker options]`: a worker consuming the cpu queue, one process per core.

Options pass through to `celery worker` (`-Q cpu,gpu`, `-c 2`, `-n name@%h` ...).
"""

from __future__ import annotations

import sys

from service.core.settings import get_settings


def worker_argv(args: list[str], concurrency: int) -> list[str]:
    """The celery argv: our defaults, unless the caller gave the same option."""
    argv = ["worker", "--loglevel", "INFO", *args]
    given = set(args)
    if not given & {"-Q", "--queues"} and not any(a.startswith(("-Q", "--queues=")) for a in args):
        argv += ["-Q", "cpu"]
    if not given & {"-c", "--concurrency"} and not any(a.startswith(("-c", "--concurrency=")) for a in args):
        argv += ["-c", str(concurrency)]
    return argv


def main(args: list[str] | None = None) -> None:
    """Run the worker; `args` are celery worker options (the command line's by default)."""
    from worker.app import app

    given = sys.argv[1:] if args is None else args
    app.worker_main(worker_argv(given, get_settings().worker_concurrency))


if __name__ == "__main__":
    main()
