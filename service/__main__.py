"""`python -m service`: serve the API on KTUNE_HOST:KTUNE_PORT."""

from __future__ import annotations

import logging

import uvicorn

from service.api.app import create_app
from service.core.settings import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
