"""Serve the API: ``python run.py`` (or ``gunicorn "run:app"`` in production).

Other commands: ``python run.py plugins``, ``python run.py worker PLUGIN``,
``python run.py beat``; ``python run.py --help`` lists them all.
"""

from core_app import create_app, main

app = create_app()
celery = app.extensions["celery"]

if __name__ == "__main__":
    main(app)
