"""The container image's exact steps, without a Docker engine: the Dockerfile is read, not
paraphrased. Its build stage's files become a wheel; the wheel goes into a fresh virtualenv
(runtime dependencies only, from the package index as `pip install` in the image does); then
the image's command runs with the image's environment (its /data volume and port mapped to a
temporary directory and a free loopback port) and the image's health check must pass. Bounded:
the whole test fails past two minutes. Also: the compose file's shape."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import _free_port
from tests.test_cli_ops import _serve_until_bound, _stop

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 120


def dockerfile() -> dict[str, object]:
    """The Dockerfile's instructions that matter here (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    stages = " ".join(lines).split(" FROM ")
    build = [line for line in lines if line.startswith("COPY ") and "--from" not in line]
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    by_word = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}
    return {"copies": [c.split()[1:-1] for c in build], "env": env, "stages": len(stages),
            "cmd": by_word["CMD"], "volume": by_word["VOLUME"],
            "healthcheck": by_word["HEALTHCHECK"], "user": by_word["USER"]}


def test_dockerfile_keeps_data_on_a_volume_and_checks_the_configured_port():
    image = dockerfile()
    env = image["env"]
    assert image["volume"] == "/data"
    assert env["DATABASE_URL"] == "sqlite:///data/runwatch.db" and env["RUNWATCH_HOME"] == "/data"
    assert "RUNWATCH_PORT" not in env and env["PORT"] == "8000"  # one knob, PORT
    assert "127.0.0.1:8000" not in image["healthcheck"]  # the port is looked up
    assert "os.environ.get('RUNWATCH_PORT') or os.environ.get('PORT')" in image["healthcheck"]
    assert "/ready" in image["healthcheck"]
    assert image["user"] == "runwatch"
    assert "RUNWATCH_BOOTSTRAP_TOKEN" not in env  # never baked into the image


def test_compose_runs_postgres_a_server_without_workers_and_a_worker():
    text = (ROOT / "compose.yaml").read_text()
    assert re.search(r"^volumes:\n  pgdata:\n", text, flags=re.M)
    text = text.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    services = re.findall(r"^  (\w[\w-]*):\n", text, flags=re.M)
    assert services == ["postgres", "migrate", "server", "worker"]
    blocks = dict(zip(services, re.split(r"^  \w[\w-]*:\n", text, flags=re.M)[1:], strict=True))
    assert "image: postgres:" in blocks["postgres"] and "pg_isready" in blocks["postgres"]
    assert 'command: ["runwatch", "migrate"]' in blocks["migrate"]
    assert 'command: ["runwatch", "serve"]' in blocks["server"]
    assert 'RUNWATCH_WORKERS_IN_SERVE: "0"' in blocks["server"]
    assert "RUNWATCH_BOOTSTRAP_TOKEN: ${RUNWATCH_BOOTSTRAP_TOKEN:?" in blocks["server"]
    assert 'command: ["runwatch", "worker"]' in blocks["worker"]
    for name in ("server", "worker"):
        assert "condition: service_completed_successfully" in blocks[name]
    assert "DATABASE_URL: postgres://runwatch:runwatch@postgres:5432/runwatch" in (
        ROOT / "compose.yaml").read_text()


def run(args: list[str], deadline: float, **kwargs) -> subprocess.CompletedProcess:
    left = deadline - time.monotonic()
    assert left > 0, f"the image's steps took more than {BUDGET_SECONDS} s"
    out = subprocess.run(args, capture_output=True, text=True, timeout=left, **kwargs)
    assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
    return out


def test_the_images_steps_build_install_migrate_serve_and_pass_the_health_check(tmp_path):
    deadline = time.monotonic() + BUDGET_SECONDS
    image = dockerfile()

    # build stage: COPY the listed files, `pip wheel` them
    src = tmp_path / "src"
    src.mkdir()
    for *sources, in image["copies"]:
        for name in sources:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, src / name,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / name, src / name)
    base = [sys.executable, "-m", "venv"]
    run([*base, str(tmp_path / "build")], deadline)
    run([str(tmp_path / "build/bin/pip"), "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(tmp_path / "wheels"), str(src)], deadline)
    (wheel,) = (tmp_path / "wheels").glob("runwatch-*.whl")

    # runtime stage: a fresh environment with the wheel and its runtime dependencies only
    run([*base, str(tmp_path / "runtime")], deadline)
    bin_ = tmp_path / "runtime/bin"
    run([str(bin_ / "pip"), "install", "--quiet", str(wheel)], deadline)
    installed = run([str(bin_ / "pip"), "list", "--format=freeze"], deadline).stdout.lower()
    assert "runwatch==" in installed and "pytest" not in installed, installed

    # the image's environment, its volume and port mapped here
    data = tmp_path / "data"
    data.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "RUNWATCH_", "XDG_", "PORT"))}
    env.update({k: v.replace("/data", str(data)) for k, v in image["env"].items()})
    env.update(PORT=str(port), HOME=str(tmp_path / "home"),
               PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", RUNWATCH_HOST="127.0.0.1")
    token = run([str(bin_ / "runwatch"), "token", "generate"], deadline, env=env).stdout.strip()
    env["RUNWATCH_BOOTSTRAP_TOKEN"] = token

    cmd = image["cmd"]
    assert cmd == '["runwatch", "serve"]', cmd
    proc, lines = _serve_until_bound([], tmp_path, env, argv=[str(bin_ / "runwatch"), "serve"])
    try:
        output = "\n".join(lines)
        assert "Uvicorn running" in output, output
        assert f"SQLite file {data}/runwatch.db" in output, output
        secret = token.split("_", 2)[2]  # rw_<key id>_<secret>; the secret may hold "_"
        assert token not in output and secret not in output
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
        ready = httpx.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["workers"] == "ok", ready.text
        check = re.search(r'CMD \["python", "-c", "(.*)"\]$', image["healthcheck"]).group(1)
        run([str(bin_ / "python"), "-c", check], deadline, env=env)
        r = httpx.post(f"{url}/graphql", json={"query": "{ connections { nodes { id } } }"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.json()["data"] == {"connections": {"nodes": []}}, r.text
    finally:
        _stop(proc)
    assert (data / "runwatch.db").is_file()
    assert time.monotonic() < deadline, f"the image's steps took more than {BUDGET_SECONDS} s"
