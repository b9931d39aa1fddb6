"""The API docs page: Swagger UI over the served OpenAPI document.

Every operation has "Try it out" (Swagger UI sends the request from the page), so a reader
can call the API where it is described. The page and its assets are served by the app
itself, the assets straight from the installed ``flask-swagger-ui`` package: deployments
are often offline, so the page names no CDN and no other host (Swagger UI's online
validator badge is switched off too). Like ``/plugins``, it is off in production unless
``EXPOSE_API_DOCS`` is set: it answers 404.
"""

from __future__ import annotations

import json
from pathlib import Path

import flask_swagger_ui
from flask import Flask, Response, abort, current_app, request, send_from_directory, url_for
from markupsafe import escape

from .schemas import schema

#: Swagger UI's distribution files, as the installed package ships them.
ASSETS = Path(flask_swagger_ui.__file__).with_name("dist")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="stylesheet" href="{assets}/index.css">
  <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle(Object.assign({config}, {{
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }}));
  </script>
</body>
</html>
"""


def init_docs_page(app: Flask) -> None:
    """Serve the page at ``API_DOCS_URL`` and Swagger UI's files below it."""
    url = app.config["API_DOCS_URL"].rstrip("/")
    app.add_url_rule(url, "api_docs", _page)
    app.add_url_rule(f"{url}/<path:filename>", "api_docs_asset", _asset)


def _page() -> Response:
    if not current_app.config["EXPOSE_API_DOCS"]:
        abort(404)
    config = {
        "url": request.script_root + current_app.config["OPENAPI_URL"],  # behind a prefix too
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "validatorUrl": None,  # the badge would ask validator.swagger.io
    }
    assets = url_for("api_docs_asset", filename="").rstrip("/")
    html = _PAGE.format(
        title=escape(f"{current_app.name} API"),
        assets=escape(assets),
        # JSON inside <script>: "</" must not end the element early.
        config=json.dumps(config).replace("</", "<\\/"),
    )
    return Response(html, mimetype="text/html")


@schema(documented=False)  # Swagger UI's own files are not part of the API
def _asset(filename: str) -> Response:
    if not current_app.config["EXPOSE_API_DOCS"]:
        abort(404)
    return send_from_directory(ASSETS, filename)
