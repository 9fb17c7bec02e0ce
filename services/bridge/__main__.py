"""`python -m services.bridge`: the faust worker with the admin API, relay and workers.

SIGTERM or SIGINT stops it cleanly (agents first, then the API, relay and workers); it records
its admin URL in `$DWSIM_HOME/services/bridge.json` while it runs. `DWSIM_FAUST_LOGLEVEL`
(default WARNING) sets the level of faust's and aiokafka's own log lines.
"""

from __future__ import annotations

import asyncio

import faust

from services.bridge.stream_app import BridgeRuntime, build_faust_app
from services.common.event_loop import new_event_loop
from services.common.logging import configure_logging, stdlib_logging_config
from services.common.otel import start_export
from services.common.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging("bridge", settings.log_level, settings.log_format)
    start_export(settings, "bridge")
    # Fail at the start, naming the tokens file, rather than with a 500 on the first request.
    settings.role_tokens()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = BridgeRuntime(settings, loop=loop)
    app = build_faust_app(settings, runtime)
    worker = faust.Worker(
        app,
        runtime,
        loop=loop,
        loglevel=settings.faust_loglevel,
        redirect_stdouts=False,
        quiet=True,
        # Else faust replaces the root's handler with a colored one on stdout: faust's,
        # mode's and aiokafka's lines would not be JSON under DWSIM_LOG_FORMAT=json.
        logging_config=stdlib_logging_config(settings.log_format, settings.faust_loglevel),
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
