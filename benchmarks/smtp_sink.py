"""An SMTP server on 127.0.0.1 that answers slowly: it sleeps in ``handle_DATA``.

    python benchmarks/smtp_sink.py --port 2525 --delay 0.2 --count-file sink.count

Stands for a real mail relay with a realistic delay. Each accepted message increments
the number in ``--count-file``. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SlowHandler:
    def __init__(self, delay: float, count_file: Path) -> None:
        self.delay = delay
        self.count_file = count_file
        self.count = 0
        self.count_file.write_text("0")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        self.count += 1
        self.count_file.write_text(str(self.count))
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--count-file", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller = Controller(
        SlowHandler(args.delay, args.count_file), hostname="127.0.0.1", port=args.port
    )
    controller.start()
    print("ready", flush=True)
    try:
        stop.wait(timeout=3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
