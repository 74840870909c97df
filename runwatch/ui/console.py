"""The GraphiQL console's page: GraphiQL and its explorer plugin from the package itself.

The page names its assets from `static/vendor/manifest.json` (the pin list the refresh script
writes), each with its `integrity=` hash, all on the server's own origin; the console's own
script is `static/console.js`. No CDN, so the console works offline and in air-gapped networks.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "static" / "vendor"


@cache
def manifest() -> list[dict[str, str]]:
    return json.loads((VENDOR / "manifest.json").read_text())["assets"]


CONSOLE_FILES = frozenset(
    [f"vendor/{asset['file']}" for asset in manifest()] + ["console.js", "console.css"])


@cache
def console_page() -> str:
    styles, scripts = [], []
    for asset in manifest():
        url = escape(f"/ui/vendor/{asset['file']}?v={asset['version']}")
        integrity = escape(asset["integrity"])
        if asset["file"].endswith(".css"):
            styles.append(f'<link rel="stylesheet" href="{url}" integrity="{integrity}">')
        else:
            scripts.append(f'<script src="{url}" integrity="{integrity}"></script>')
    head = "\n    ".join(styles)
    body = "\n    ".join(scripts)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>runwatch · GraphiQL</title>
    <link rel="icon" href="data:,">
    {head}
    <link rel="stylesheet" href="/ui/console.css">
  </head>
  <body>
    <div id="graphiql">Loading the console…</div>
    {body}
    <script src="/ui/console.js"></script>
  </body>
</html>
"""
