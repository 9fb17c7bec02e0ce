"""`python -m services.console`: the web console, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio

from services.common.logging import configure_logging
from services.common.settings import Settings
from services.console.server import serve


def main() -> None:
    settings = Settings()
    configure_logging("console", settings.log_level, settings.log_format)
    # Fail at the start, naming the tokens file, rather than on the first login.
    settings.role_tokens()
    raise SystemExit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
