"""``python -m core_app``: the host's command line, for an app given with ``--app``
or, without it, ``create_app()`` itself (a plugin's repository has no run.py)."""

from .cli import main

main()
