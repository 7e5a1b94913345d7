"""`python -m service`: serve the API on KTUNE_HOST:KTUNE_PORT. `python -m service keys ...`: API keys."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from service import keys_cli
from service.core.logs import configure_logging
from service.core.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="With no command, serve the ktune API on KTUNE_HOST:KTUNE_PORT.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{keys}")
    keys_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        sys.exit(keys_cli.run(args))
    serve()


def serve() -> None:
    """Run the API; exits non-zero, saying why, when the settings are unsafe (KTUNE_AUTH=off off loopback)."""
    # Imported here so that `keys` commands start without loading the web stack.
    import uvicorn

    from service.api.app import create_app
    from service.api.auth import UnsafeAuthSetting
    from service.core.lazy_imports import MissingModule

    settings = get_settings()
    configure_logging(settings.log_format)
    try:
        app = create_app(settings)
    except (UnsafeAuthSetting, MissingModule) as exc:
        logging.getLogger("service").error("refusing to start: %s", exc)
        sys.exit(2)
    reader = app.state.event_reader

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn waits for open responses before it stops: event streams end now, not when their jobs do.
            reader.stop()
            super().handle_exit(sig, frame)

    # log_config=None: uvicorn's records go to the root logger, in KTUNE_LOG_FORMAT like every other.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", log_config=None)
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # it could not start (the port is taken ...): uvicorn.run's exit code


if __name__ == "__main__":
    main()
