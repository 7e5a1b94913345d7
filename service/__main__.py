"""`python -m service`: serve the API on KTUNE_HOST:KTUNE_PORT. `python -m service keys ...`: API keys."""

from __future__ import annotations

import argparse
import logging
import sys

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

    settings = get_settings()
    configure_logging(settings.log_format)
    try:
        app = create_app(settings)
    except UnsafeAuthSetting as exc:
        logging.getLogger("service").error("refusing to start: %s", exc)
        sys.exit(2)
    # log_config=None: uvicorn's records go to the root logger, in KTUNE_LOG_FORMAT like every other.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
