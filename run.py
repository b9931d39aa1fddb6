"""Serve the API: ``python run.py`` (or ``gunicorn "run:app"`` in production).

Other commands: ``python run.py plugins``, ``python run.py worker PLUGIN``,
``python run.py beat``; ``python run.py --help`` lists them all. The command line
runs first: it decides what this process is for (a web server, a worker for one
plugin, beat), then imports this module as ``run``, whose ``create_app()`` builds the
app for that role alone.
"""

from core_app import create_app, main

if __name__ == "__main__":
    main("run:app")

app = create_app()
celery = app.extensions["celery"]
