"""Re-fetch the GraphiQL console's third-party assets from the npm registry.

The console at `GET /graphql` loads only files shipped inside the package
(`runwatch/ui/static/vendor/`), each pinned in `vendor/manifest.json` by package, version and
sha384 (the `integrity=` the page sends to the browser). This script is the only way those files
change: it runs `npm pack` for each pinned package (npm checks the tarball against the registry's
own integrity), copies the one minified build the console needs out of it, and rewrites the
manifest with the file's sha384.

    python scripts/refresh_console_assets.py                 # the versions below
    python scripts/refresh_console_assets.py graphiql=3.8.3  # bump one package

Needs `npm` and access to the npm registry; nothing else. Run the test suite afterwards
(tests/test_console.py checks every file against the manifest and the page against both).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "runwatch" / "ui" / "static" / "vendor"

# package -> version; the versions strawberry-graphql 0.341's own GraphiQL page uses.
VERSIONS = {
    "react": "18.2.0",
    "react-dom": "18.2.0",
    "graphiql": "3.8.3",
    "@graphiql/plugin-explorer": "1.0.2",
}
# (package, path inside its tarball, file name in vendor/), in the order the page loads them.
FILES = [
    ("react", "umd/react.production.min.js", "react.production.min.js"),
    ("react-dom", "umd/react-dom.production.min.js", "react-dom.production.min.js"),
    ("graphiql", "graphiql.min.css", "graphiql.min.css"),
    ("@graphiql/plugin-explorer", "dist/style.css", "plugin-explorer.css"),
    ("graphiql", "graphiql.min.js", "graphiql.min.js"),
    ("@graphiql/plugin-explorer", "dist/index.umd.js", "plugin-explorer.umd.js"),
]


def sha384(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def pack(package: str, version: str, into: Path) -> tuple[Path, str]:
    """`npm pack` one pinned package; returns the tarball and the registry's integrity."""
    out = subprocess.run(
        ["npm", "pack", f"{package}@{version}", "--json", "--pack-destination", str(into)],
        check=True, capture_output=True, text=True,
    ).stdout
    info = json.loads(out)[0]
    return into / info["filename"], info["integrity"]


def main(argv: list[str]) -> int:
    versions = dict(VERSIONS)
    for arg in argv:
        name, _, version = arg.rpartition("=")
        if name not in versions or not version:
            print(f"unknown package or missing version: {arg!r} (one of {list(versions)})")
            return 2
        versions[name] = version
    VENDOR.mkdir(parents=True, exist_ok=True)
    assets = []
    with tempfile.TemporaryDirectory() as tmp:
        tarballs = {name: pack(name, version, Path(tmp)) for name, version in versions.items()}
        for package, inner, target in FILES:
            tarball, tarball_integrity = tarballs[package]
            with tarfile.open(tarball) as archive:
                member = archive.extractfile(f"package/{inner}")
                if member is None:
                    raise SystemExit(f"{package}@{versions[package]} has no {inner}")
                data = member.read()
            (VENDOR / target).write_bytes(data)
            assets.append({
                "file": target, "package": package, "version": versions[package],
                "path": inner, "integrity": sha384(data), "bytes": len(data),
                "tarball_integrity": tarball_integrity,
            })
            print(f"{target:32} {package}@{versions[package]} {len(data):>9,} bytes")
    manifest = {
        "comment": "Written by scripts/refresh_console_assets.py; do not edit by hand.",
        "source": "https://registry.npmjs.org (npm pack)",
        "assets": assets,
    }
    (VENDOR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(a["bytes"] for a in assets)
    print(f"{'total':32} {total:>27,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
