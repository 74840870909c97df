"""The README's quickstart, run as written: its `curl` block (one command at a time, each
answer compared with the answer the README shows under it) and its Python block, against a
real `runwatch serve` started as `make serve` starts it, on a fresh database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.test_cli import _free_port
from tests.test_cli_ops import _serve_until_bound, _stop, clean_env

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_blocks() -> tuple[str, str]:
    """(the shell block with the curl commands, the Python block) of the Quickstart."""
    text = README.read_text()
    section = text.split("\n## Quickstart: a first run in a minute\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    (shell,) = [body for lang, body in blocks if lang == "sh" and "curl" in body]
    (python,) = [body for lang, body in blocks if lang == "python"]
    return shell, python


def steps(shell: str) -> list[tuple[str, str | None]]:
    """Each command (continuation lines joined) and the answer the README shows after it
    (a `# {…}` comment; None when it shows none)."""
    result: list[tuple[str, str | None]] = []
    for line in re.sub(r"\\\n\s*", " ", shell).splitlines():
        if line.startswith("curl "):
            result.append((line, None))
        elif line.startswith("# {") and result:
            result[-1] = (result[-1][0], line[2:])
    return result


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_the_quickstart_blocks_are_there():
    shell, python = quickstart_blocks()
    commands = steps(shell)
    assert len(commands) == 5
    assert [c.split()[1:3] for c, _ in commands] == [
        ["-s", "-X"], ["-s", "-X"], ["-s", "-X"], ["-s", '"$RW/api/v1/organisations/1/'
                                                   'integrations/warehouse-connections/1/'
                                                   'telemetry/"'], ["-s", '"$RW/graphql"']]
    assert "httpx.Client" in python


def test_the_quickstart_works_as_written(tmp_path):
    shell, python = quickstart_blocks()
    env = clean_env(tmp_path / "home")
    port = _free_port()
    proc, lines = _serve_until_bound(["serve", "--port", str(port)], tmp_path, env)
    try:
        token = next(x.strip() for x in lines if x.strip().startswith("rw_"))
        env = {**env, "RW": f"http://127.0.0.1:{port}", "TOKEN": token}
        answers = []
        for command, shown in steps(shell):
            out = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env,
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, (command, out.stderr)
            answers.append(out.stdout)
            if shown is None:
                assert out.stdout == "", (command, out.stdout)  # 204
            else:  # the README shows the start of the answer, up to its "…"
                assert squeeze(out.stdout).startswith(squeeze(shown.split("…", 1)[0])), (
                    command, out.stdout, shown)
        created, started, _reported, telemetry, graphql = answers
        assert json.loads(created)["id"] == 1 and json.loads(started)["run_id"] == 1
        telemetry = json.loads(telemetry)
        assert telemetry["status"] == "active"
        assert telemetry["events_last_24h"] == {"evaluations": 1000, "custom_events": 150,
                                                "total": 1200}
        (node,) = json.loads(graphql)["data"]["connections"]["nodes"]
        assert node["telemetry"]["eventsLast24h"] == {"total": 1200}

        out = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        printed = out.stdout.splitlines()
        assert len(printed) == 2
        assert printed[0].startswith("{'status': 'active'") and "'total': 1200" in printed[0]
        assert "'name': 'analytics-py'" in printed[1]
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/organisations/1/integrations/"
                      "warehouse-connections/", headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
        assert [c["name"] for c in r.json()["results"]] == ["analytics", "analytics-py"]
    finally:
        _stop(proc)
