"""Every example in README.md runs, as written, against the demo data set of `make run`, so an
example can never rot: each `curl` line against a real `quarry serve`, each `make` and
`.venv/bin/quarry` line as a process, the `quarry` synopsis against the real parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from service.cli import build_parser
from service.demo import prepare
from tests.conftest import make_settings
from tests.serving import env_for, running_server
from tests.test_cli import REPO

README = (REPO / "README.md").read_text()
HOST = "http://127.0.0.1:8000"
# Examples that cannot run inside a test, and why. Anything else that is not run fails.
NOT_RUN = {
    "make run": "serves until stopped; this test runs the server it starts on the same data",
    "make test": "the suite this test is part of",
    "make lint": "ruff, run by CI beside the suite",
    ".venv/bin/pytest -m": "a part of the suite this test is part of",
    ".venv/bin/openapi-python-client generate": "tests/test_generated_client.py generates the "
    "client from the served document and uses it",
}
# Request fields whose values must each exist in the demo data: an example that names a value
# nothing has (`Vue` where the data says `Vue.js`) shows nothing of what it promises.
VALUE_FIELDS = ("technologies", "industries", "functions", "tlds", "seniorities", "departments",
                "locations", "job_titles")


def blocks(language: str = "sh") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's commands: continued lines and multi-line quotes joined, comments dropped."""
    found, pending = [], ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open
            continue
        if words:
            found.append(pending.strip())
        pending = ""
    assert not pending, pending
    return found


def words_of(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def synopsis(command: str) -> bool:
    return words_of(command)[0] == "quarry"


def check_synopsis() -> None:
    """Each `quarry ...` line names a real command and only its real options; every command
    of the parser has its line."""
    parser = build_parser()
    listed = set()
    for command in (c for block in blocks() for c in commands(block) if synopsis(c)):
        words = words_of(command)[1:]
        current, path = parser, []
        while words and not words[0].startswith(("-", "[")):
            sub = _subcommands(current)
            if not sub or words[0] not in sub:
                break
            current = sub[words.pop(0)]
            path.append(current.prog)
        assert not _subcommands(current), f"{command!r} names no whole command"
        known = {o for action in current._actions for o in action.option_strings}
        for option in re.findall(r"(--[a-z-]+)", command.split("#")[0]):
            assert option in known, f"{command!r}: {current.prog} has no {option}"
        listed.add(current.prog)
    every = set()
    _leaves(parser, every)
    assert every <= listed, f"commands missing from the README synopsis: {every - listed}"


def _subcommands(parser) -> dict:
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def _leaves(parser, into: set) -> None:
    sub = _subcommands(parser)
    if not sub:
        into.add(parser.prog)
    for child in sub.values():
        _leaves(child, into)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The data set `make run` writes (service/demo.py, same sizes and seed), served by a real
    `quarry serve`."""
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    prepare(make_settings(data_dir))
    log = tmp_path_factory.mktemp("demo-log") / "serve.log"
    with running_server(data_dir, log) as server:
        yield server


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_example_runs(demo, tmp_path):
    check_synopsis()
    env = env_for(tmp_path / "make-data", KEY=demo.key)
    # Run the examples' `make` as a reader's shell would: under `make test` the suite inherits
    # MAKELEVEL, and a nested make prints "Entering directory" lines into what it answers.
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    ran, version = 0, None
    for number, block in enumerate(blocks()):
        # Each block starts from its own users database, as a reader would try it.
        env["QUARRY_DB"] = str(tmp_path / f"users-{number}.db")
        for command in commands(block):
            words = words_of(command)
            if synopsis(command) or re.fullmatch(r"[A-Z_]+=\S*", words[0]) and len(words) == 1:
                continue  # the synopsis is checked against the parser; KEY=... is set here
            if " ".join(words[:2]) in NOT_RUN:
                continue
            if words[0] == "curl":
                run_curl(command, demo, tmp_path, env)
            elif words[0] == "make" or words[0] == ".venv/bin/quarry" or (
                    words[0] == "echo" and "|" in words and
                    words[words.index("|") + 1] == ".venv/bin/quarry"):
                command = command.replace("/tmp/drop", str(tmp_path / "drop"))
                if "VERSION=" in command:
                    assert version is not None, "make snapshots-use before any snapshot"
                    command = re.sub(r"VERSION=\S+", f"VERSION={version}", command)
                done = shell(command, REPO, env)
                assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
                if words[:2] == ["make", "snapshots"]:
                    version = done.stdout.split("\t", 1)[0].strip()
                    assert re.fullmatch(r"\d{8}T\d{6}Z-\d{6}", version), done.stdout
                assert done.stdout.strip(), command
            else:
                pytest.fail(f"README example not run by this test (add it, or to NOT_RUN): "
                            f"{command!r}")
            ran += 1
    assert ran >= 16  # the curl lines, make data / refresh / snapshots, the key of a new user


def run_curl(command: str, server, folder: Path, env: dict[str, str]) -> None:
    assert HOST in command, command
    # --fail-with-body: an answer of 400 or more makes curl exit 22.
    text = command.replace(HOST, server.base).replace("curl -s", "curl -s --fail-with-body", 1)
    done = shell(text, folder, env)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    words = words_of(command)
    url = urlsplit(next(w for w in words if w.startswith(HOST)))
    if ">" in words:
        check_file(folder / words[words.index(">") + 1], command)
    else:
        envelope = json.loads(done.stdout)
        assert envelope["errors"] == [] and envelope["data"], (command, done.stdout[:500])
        lookup = re.fullmatch(r"/v1/(companies|contacts)/((cmp|ctc)_\w+)", url.path)
        if lookup:
            assert envelope["data"]["id"] == lookup[2]
    kind = re.fullmatch(r"/v1/(companies|contacts)/(search|export)", url.path)
    if kind:
        request = dict(_query_fields(url.query))
        if "-d" in words:
            request.update(json.loads(words[words.index("-d") + 1]))
        for field in VALUE_FIELDS:
            for value in request.get(field, []):
                answer = httpx.post(f"{server.base}/v1/{kind[1]}/search", headers=server.headers,
                                    json={field: [value], "per_page": 1}, timeout=30)
                assert answer.status_code == 200, answer.text
                assert answer.json()["meta"]["total"] > 0, \
                    f"{command!r}: no {kind[1]} in the demo data with {field} = {value!r}"


def _query_fields(query: str):
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl(query):
        fields.setdefault(name, []).append(value)
    return fields.items()


def check_file(path: Path, command: str) -> None:
    """A downloaded export holds records; a downloaded OpenAPI document has paths."""
    assert path.is_file() and path.stat().st_size > 0, command
    if path.suffix == ".ndjson":
        lines = path.read_text().splitlines()
        assert lines and all("id" in json.loads(line) for line in lines), command
    elif path.suffix == ".csv":
        assert len(path.read_text().splitlines()) > 1, command
    elif path.suffix == ".parquet":
        assert pq.read_table(path).num_rows > 0, command
    elif path.suffix == ".arrows":
        with open(path, "rb") as handle:
            assert ipc.open_stream(handle).read_all().num_rows > 0, command
    elif path.suffix == ".json":
        assert json.loads(path.read_text())["paths"], command
    else:
        pytest.fail(f"{command!r}: no check for a {path.suffix} download")
    os.unlink(path)
