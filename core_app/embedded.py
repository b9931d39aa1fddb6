"""The embedded default broker: Celery on files in the instance folder.

With no ``BROKER_URL``, tasks still run asynchronously with no server installed: kombu's
filesystem transport keeps queued messages as files (so they survive a restart) and the
file result backend keeps results. Good for one machine in development; use Redis for
anything more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: kombu's filesystem transport; the host name is ignored but must be given.
EMBEDDED_BROKER_URL = "filesystem://localhost/"


def embedded_config(instance_path: str | Path) -> dict[str, Any]:
    """Celery settings for the filesystem broker and result backend in the instance folder."""
    root = Path(instance_path) / "celery"
    folders = {
        "data_folder_in": root / "queue",
        "data_folder_out": root / "queue",
        "processed_folder": root / "processed",
        "control_folder": root / "control",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        # The filesystem transport ignores the host, but kombu warns on every connection
        # ("No hostname was supplied. Reverting to default 'localhost'") when it is empty.
        "broker_url": EMBEDDED_BROKER_URL,
        "broker_transport_options": {
            **{key: str(path) for key, path in folders.items()},
            "store_processed": False,
        },
        "result_backend": embedded_result_backend(instance_path),
    }


def embedded_result_backend(instance_path: str | Path) -> str:
    """Celery's file result backend in the instance folder: results any process on this
    machine can read, with no server (also development's default beside RabbitMQ)."""
    results = Path(instance_path) / "celery" / "results"
    results.mkdir(parents=True, exist_ok=True)
    return f"file://{results}"
