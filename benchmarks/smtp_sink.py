"""An SMTP server on 127.0.0.1 that answers slowly: it sleeps in ``handle_DATA``.

    python benchmarks/smtp_sink.py --port 2525 --delay 0.2 --count-file sink.count

Stands for a real mail relay with a realistic delay (core_app.testing.SmtpSink). Each
accepted message increments the number in ``--count-file``. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from core_app.testing import SmtpSink


class CountingSink(SmtpSink):
    """The shipped sink, writing how many messages it accepted to ``count_file``."""

    def __init__(self, port: int, delay: float, count_file: Path) -> None:
        super().__init__(delay=delay, port=port)
        self.count_file = count_file
        self.count_file.write_text("0")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.count_file.write_text(str(len(self.received)))
        return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--count-file", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with CountingSink(args.port, args.delay, args.count_file):
        print("ready", flush=True)
        stop.wait(timeout=3600)


if __name__ == "__main__":
    main()
