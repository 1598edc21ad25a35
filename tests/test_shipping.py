"""Docker, compose, CI and pre-commit of the generated project, checked on every bake.

There is no Docker engine and no GitHub here, so each file is checked twice:
- statically: schemas (Compose Specification, GitHub workflows), hadolint, and structure tests
  for the properties the project promises (non-root, healthchecks, persistence, no secrets);
- for real: the commands these files contain (the workflow's steps, the Dockerfile's build and
  container commands, compose's Redis command and healthcheck, the pre-commit hooks) run
  inside a baked project installed in its own virtual environment, so a typo in any fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.specifiers import SpecifierSet
from ruamel.yaml import YAML

from .baking import (
    COOKIECUTTER_JSON,
    TEMPLATE_DIR,
    BakedProject,
    InstalledProject,
    child_env,
    output_tail,
    run,
)

ANSWER_SETS = [{}, {"python_version": "3.11"}, {"python_version": "3.13"}]
ANSWER_IDS = ["defaults", "python3.11", "python3.13"]

COMPOSE_SCHEMA = TEMPLATE_DIR.parent / "shared" / "schemas" / "compose-spec.json"
TEMPLATE_PROJECT_DIR = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"

TOKEN = "987654:shipping-test-SECRET"
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET")
# Variables the bot reads; stripped from the developer's environment for container commands.
BOT_SETTING = re.compile(
    r"^(BOT_TOKEN|TELEGRAM_API_URL|REDIS_\w+|FOOD_API_\w+|STATE_\w+|LOCK_\w+|LOG_LEVEL"
    r"|SHUTDOWN_TIMEOUT|MAX_CONCURRENT_UPDATES)$"
)

# pre-commit-hooks' own manifest for the hooks the config may use: console script and file types.
HYGIENE_HOOKS: dict[str, tuple[str, list[str]]] = {
    "trailing-whitespace": ("trailing-whitespace-fixer", ["text"]),
    "end-of-file-fixer": ("end-of-file-fixer", ["text"]),
    "mixed-line-ending": ("mixed-line-ending", ["text"]),
    "check-yaml": ("check-yaml", ["yaml"]),
    "check-toml": ("check-toml", ["toml"]),
    "check-merge-conflict": ("check-merge-conflict", ["text"]),
    "check-added-large-files": ("check-added-large-files", []),
    "detect-private-key": ("detect-private-key", ["text"]),
    "debug-statements": ("debug-statement-hook", ["python"]),
}
# ruff-pre-commit's manifest.
RUFF_HOOKS = {"ruff": "ruff check --force-exclude", "ruff-check": "ruff check --force-exclude",
              "ruff-format": "ruff format --force-exclude"}  # fmt: skip


# --- helpers -------------------------------------------------------------------------------


def load_yaml(text: str) -> Any:
    # YAML 1.2 (ruamel's default) keeps the workflow's `on:` key a string, as GitHub reads it.
    return YAML(typ="safe", pure=True).load(text)


def tool(name: str) -> str:
    """An executable of the test environment (its venv first, then PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements-dev.txt", pytrace=False)
    return found


def python_answer(project: BakedProject) -> str:
    default = COOKIECUTTER_JSON["python_version"]
    assert isinstance(default, list)
    return project.answers.get("python_version", str(default[0]))


def parse_duration(text: str) -> float:
    """Seconds in a compose duration such as `30s`, `1m30s` or `1500ms`."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", text)
    assert parts, f"not a duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), self.args
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and ARGs resolved."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            for name, value in global_args.items():
                args = args.replace(f"${{{name}}}", value).replace(f"${name}", value)
            parts = args.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=alias))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, args))
    return global_args, stages


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on relative paths."""
    pattern = pattern.strip().lstrip("/").rstrip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def build_context(project: Path) -> list[str]:
    """The files `docker build .` sends, after .dockerignore (last matching rule wins)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in (project / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, pattern_regex(line.lstrip("!"))))
    sent: list[str] = []
    for path in sorted(project.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(project).as_posix()
        prefixes = ["/".join(rel.split("/")[: n + 1]) for n in range(rel.count("/") + 1)]
        excluded = False
        for negated, regex in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = not negated
        if not excluded:
            sent.append(rel)
    return sent


def bot_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without the developer's bot settings, plus `extra`."""
    env = {k: v for k, v in child_env().items() if not BOT_SETTING.match(k)}
    env.update(extra)
    return env


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=ANSWER_SETS, ids=ANSWER_IDS)
def project(request: pytest.FixtureRequest, baked: Callable[..., BakedProject]) -> BakedProject:
    """A read-only bake for each answer set."""
    answers: dict[str, str] = request.param
    return baked(**answers)


@pytest.fixture(scope="module")
def default_project(baked: Callable[..., BakedProject]) -> BakedProject:
    return baked()


class RedisFromCompose:
    """compose's `redis` service command, run with redis-server from PATH on a free port."""

    def __init__(self, command: list[str], data_dir: Path) -> None:
        executable = shutil.which(command[0])
        if executable is None:
            pytest.fail(f"{command[0]} is not on PATH: apt-get install redis-server", pytrace=False)
        self.argv = [executable, *command[1:]]
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Only where the container differs: the port, the loopback address and the data dir.
        self.process = subprocess.Popen(
            [*self.argv, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [tool("redis-cli"), "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return result.stdout.strip()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def compose(default_project: BakedProject) -> dict[str, Any]:
    data = load_yaml(default_project.read("docker-compose.yml"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose_redis(
    compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisFromCompose]:
    server = RedisFromCompose(
        compose["services"]["redis"]["command"], tmp_path_factory.mktemp("redis-data")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FakeBotAPI:
    """A tiny Bot API on 127.0.0.1: getMe, deleteWebhook, and an always-empty getUpdates."""

    def __init__(self, token: str) -> None:
        self.calls: list[str] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                _, bot, method = self.path.split("?")[0].split("/", 2)
                if bot != f"bot{token}":
                    self.reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                    return
                calls.append(method)
                if method == "getMe":
                    user = {"id": 1, "is_bot": True, "first_name": "Bot", "username": "ship_bot"}
                    self.reply(200, {"ok": True, "result": user})
                elif method == "deleteWebhook":
                    self.reply(200, {"ok": True, "result": True})
                elif method == "getUpdates":
                    time.sleep(0.2)
                    self.reply(200, {"ok": True, "result": []})
                else:
                    self.reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})

            do_GET = do_POST

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # A bot stopping mid long-poll hangs up before the answer: nothing to report.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads `calls` instead."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeBotAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bot_api() -> Iterator[FakeBotAPI]:
    with FakeBotAPI(TOKEN) as api:
        yield api


# --- static checks on every bake -----------------------------------------------------------


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.webhook.yml"])
def test_compose_files_validate_against_the_compose_spec(
    project: BakedProject, compose_file: str
) -> None:
    if COMPOSE_SCHEMA.is_file():
        schema = ["--schemafile", str(COMPOSE_SCHEMA)]
    else:
        schema = ["--builtin-schema", "vendor.compose-spec"]
    result = project.run(tool("check-jsonschema"), *schema, compose_file)
    assert result.returncode == 0, output_tail(result)


def test_caddyfile_validates_with_caddy(project: BakedProject) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is missing: `bash scripts/test.sh` installs it (apt-get install caddy)")
    result = project.run(
        caddy, "validate", "--config", "Caddyfile", "--adapter", "caddyfile",
        env={**os.environ, "DOMAIN": "bot.example.com"},
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)
    assert "Valid configuration" in result.stdout + result.stderr


def test_webhook_compose_structure(project: BakedProject) -> None:
    base = load_yaml(project.read("docker-compose.yml"))
    webhook = load_yaml(project.read("docker-compose.webhook.yml"))
    bot, caddy = webhook["services"]["bot"], webhook["services"]["caddy"]
    assert bot["environment"]["WEBHOOK_URL"].startswith("https://${DOMAIN:?")
    assert bot["environment"]["WEBHOOK_URL"].endswith("/telegram/updates")
    assert bot["deploy"]["replicas"] >= 2
    assert bot["deploy"]["mode"] == "replicated", "podman-compose ignores replicas without it"
    assert "ports" not in bot, "replicas are reached through the proxy only"
    assert caddy["image"].startswith("caddy:")
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert caddy["depends_on"]["bot"]["condition"] == "service_healthy"
    assert set(webhook["services"]) == {"bot", "caddy"}, "Redis comes from docker-compose.yml"
    assert "ports" not in base["services"]["redis"]
    caddyfile = project.read("Caddyfile")
    assert "/telegram/updates" in caddyfile
    assert "name bot" in caddyfile
    assert "port 8080" in caddyfile


def test_workflow_validates(project: BakedProject) -> None:
    result = project.run(
        tool("check-jsonschema"),
        "--builtin-schema", "vendor.github-workflows",
        ".github/workflows/ci.yml",
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)


def test_template_workflow_validates() -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         ".github/workflows/ci.yml"],
        cwd=TEMPLATE_DIR,
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)


def test_dockerfile_passes_hadolint(project: BakedProject) -> None:
    result = project.run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, output_tail(result)


def test_dockerfile_structure(project: BakedProject) -> None:
    args, stages = parse_dockerfile(project.read("Dockerfile"))
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    for stage in stages:
        assert stage.base == f"python:{python_answer(project)}-slim"
    runtime = stages[-1]
    # The runtime stage gets the build stage's result, not the build tools.
    copied_from = [i.args for i in runtime.all("COPY") if i.args.startswith("--from=")]
    assert copied_from, "the runtime stage copies nothing from the build stage"
    users = runtime.all("USER")
    assert users, "the runtime stage runs as root"
    assert users[-1].args.split(":")[0] not in {"root", "0"}
    (healthcheck,) = runtime.all("HEALTHCHECK")
    options, _, command = healthcheck.args.partition("CMD ")
    assert re.search(r"--timeout=\d+s", options)
    assert Instruction("CMD", command).exec_form() == ["python", "-m", project.slug, "healthcheck"]
    assert runtime.all("CMD")[-1].exec_form() == ["python", "-m", project.slug]
    for stage in stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            assert not any(word in instruction.args.upper() for word in SECRET_WORDS), instruction
        for instruction in stage.all("COPY"):
            assert ".env" not in instruction.args.split(), instruction
    assert not any(word in name.upper() for name in args for word in SECRET_WORDS)


def test_env_is_ignored_by_git_and_docker(project: BakedProject, tmp_path: Path) -> None:
    assert ".env" in project.read(".gitignore").splitlines()
    assert ".env" in project.read(".dockerignore").splitlines()
    copy = tmp_path / "context"
    shutil.copytree(project.path, copy)
    (copy / ".env").write_text(f"BOT_TOKEN={TOKEN}\n", encoding="utf-8")
    (copy / ".env.production").write_text(f"BOT_TOKEN={TOKEN}\n", encoding="utf-8")
    sent = build_context(copy)
    assert ".env" not in sent
    assert ".env.production" not in sent
    assert not any(path.startswith(("tests/", ".git/", ".venv/")) for path in sent)
    # What `uv sync --locked` in the image needs is sent.
    assert {"pyproject.toml", "README.md", "uv.lock"} <= set(sent)
    assert f"{project.slug}/__main__.py" in sent
    assert "botnodes/__init__.py" in sent


def test_compose_structure(project: BakedProject) -> None:
    compose = load_yaml(project.read("docker-compose.yml"))
    redis = compose["services"]["redis"]
    bot = compose["services"]["bot"]

    assert re.fullmatch(r"redis:\d+(\.\d+)*(-alpine)?", redis["image"]), redis["image"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, mount = redis["volumes"][0].partition(":")
    assert mount == "/data"
    assert volume in compose["volumes"], "Redis data must be on a named volume"
    assert "ports" not in redis, "Redis must not be published to the host"
    assert "network_mode" not in redis
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])

    assert bot["build"] == "."
    env_file = bot["env_file"]
    assert ".env" in ([env_file] if isinstance(env_file, str) else env_file)
    assert bot["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    assert bot["restart"] == "unless-stopped"
    assert parse_duration(bot["stop_grace_period"]) > 10, "longer than Docker's default 10s"
    assert "ports" not in bot


# The only Jinja the compose file may hold: whole lines that keep an option's parts in or out.
OPTION_BLOCK_LINE = re.compile(r'\{%- (if cookiecutter\.\w+ == "yes"|endif) %\}')


def test_compose_template_is_plain_compose() -> None:
    """Plain compose but for the option blocks: no rendered values, no logic beyond yes/no."""
    text = (TEMPLATE_PROJECT_DIR / "docker-compose.yml").read_text(encoding="utf-8")
    plain = [line for line in text.splitlines() if not OPTION_BLOCK_LINE.fullmatch(line)]
    assert "{{" not in "\n".join(plain)
    assert "{%" not in "\n".join(plain)


ACTION_PIN = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}")
SUPPORTED_PYTHONS = ["3.11", "3.12", "3.13", "3.14"]


def test_workflow_structure(project: BakedProject) -> None:
    workflow = load_yaml(project.read(".github/workflows/ci.yml"))
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {}, "no permission unless a job asks for it"
    jobs = workflow["jobs"]
    assert set(jobs) == {"lock", "check"}
    lock_runs = [step["run"] for step in jobs["lock"]["steps"] if "run" in step]
    assert "uv lock --check" in lock_runs
    assert any("uv export --frozen" in r and "git diff --exit-code" in r for r in lock_runs)

    job = jobs["check"]
    assert job["strategy"]["matrix"]["python-version"] == SUPPORTED_PYTHONS
    assert job["env"]["UV_PYTHON"] == "${{ matrix.python-version }}"
    service = job["services"]["redis"]
    assert service["image"].startswith("redis:")
    assert "--health-cmd" in service["options"]
    host_port = service["ports"][0].split(":")[0]
    assert job["env"]["REDIS_URL"] == f"redis://localhost:{host_port}/0"
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs[0] == "uv sync --locked"
    for command in ("ruff check", "ruff format --check", "mypy", "deptry .", "pytest"):
        assert any(r.startswith(f"uv run --locked {command}") for r in runs), command
    # CI runs every tier: plain `pytest` leaves the ops tier (processes, outages) out.
    assert any("pytest" in r and "--all" in r.split() for r in runs), runs

    for name, job in jobs.items():
        assert job["permissions"] == {"contents": "read"}, name
        for step in job["steps"]:
            if "uses" not in step:
                continue
            assert ACTION_PIN.fullmatch(step["uses"]), f"{step['uses']}: pin a full commit hash"
            if step["uses"].startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
            if step["uses"].startswith("astral-sh/setup-uv@"):
                assert step["with"]["version"] == uv_required(project)


def uv_required(project: BakedProject) -> str:
    """The uv version the project's pyproject.toml requires (`required-version = "==X"`)."""
    found = re.search(r'^required-version = "==([\d.]+)"$', project.read("pyproject.toml"), re.M)
    assert found is not None, "pyproject.toml must pin uv in [tool.uv] required-version"
    return found.group(1)


def test_every_uv_is_the_same_version(project: BakedProject) -> None:
    """The Dockerfile, CI and the template's own environment run the uv the project requires."""
    version = uv_required(project)
    assert f"uv=={version}" in project.read("Dockerfile")
    assert f"uv=={version}\n" in (TEMPLATE_DIR / "requirements-dev.txt").read_text(encoding="utf-8")


def pre_commit_hooks(project: BakedProject) -> dict[str, dict[str, Any]]:
    """Hook id -> the hook's config plus its repo's url and rev."""
    config = load_yaml(project.read(".pre-commit-config.yaml"))
    return {
        hook["id"]: {**hook, "repo": repo["repo"], "rev": repo.get("rev")}
        for repo in config["repos"]
        for hook in repo["hooks"]
    }


def test_pre_commit_config_structure(project: BakedProject) -> None:
    hooks = pre_commit_hooks(project)
    assert {"ruff-check", "ruff-format", "mypy"} <= set(hooks)
    assert {"trailing-whitespace", "end-of-file-fixer", "check-yaml", "check-toml"} <= set(hooks)
    assert hooks["ruff-check"]["repo"] == "https://github.com/astral-sh/ruff-pre-commit"
    assert hooks["trailing-whitespace"]["repo"] == "https://github.com/pre-commit/pre-commit-hooks"
    # mypy runs from the project's venv, where the project's dependencies are installed.
    assert hooks["mypy"]["repo"] == "local"
    assert hooks["mypy"]["language"] == "system"
    # The ruff of the hooks is the dev group's (CI's), so CI and the hooks format alike.
    dev = re.search(r'"ruff([^"]*)"', project.read("pyproject.toml"))
    assert dev is not None
    assert hooks["ruff-format"]["rev"].lstrip("v") in SpecifierSet(dev.group(1))


def test_readme_runs_with_docker_in_three_steps_and_installs_pre_commit(
    project: BakedProject,
) -> None:
    readme = project.read("README.md")
    section = re.search(r"^## Run with Docker\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section is not None, "README has no 'Run with Docker' section"
    steps = re.findall(r"^\d+\. ", section.group(1), re.M)
    assert 1 <= len(steps) <= 3, section.group(1)
    assert "cp .env.example .env" in section.group(1)
    assert "docker compose up" in section.group(1)
    assert "pre-commit install" in readme


def test_env_example_documents_every_setting(project: BakedProject) -> None:
    lines = project.read(".env.example").splitlines()
    names = [line.split("=")[0].lstrip("# ") for line in lines if re.match(r"#? ?[A-Z_]+=", line)]
    for name in ("BOT_TOKEN", "REDIS_URL", "TELEGRAM_API_URL", "SHUTDOWN_TIMEOUT"):
        assert name in names, name


# --- the files' commands, run for real ----------------------------------------------------


def test_compose_redis_command_persists_and_its_healthcheck_pings(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    server = RedisFromCompose(compose["services"]["redis"]["command"], tmp_path / "data")
    healthcheck = compose["services"]["redis"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    probe = healthcheck[1].replace(
        "redis-cli", f"{shlex.quote(tool('redis-cli'))} -p {server.port}"
    )
    server.start()
    try:
        assert subprocess.run(["sh", "-c", probe], check=False, timeout=10).returncode == 0
        assert server.cli("CONFIG", "GET", "appendonly").splitlines() == ["appendonly", "yes"]
        assert server.cli("SET", "survives", "restart") == "OK"
    finally:
        server.stop()
    assert subprocess.run(["sh", "-c", probe], check=False, timeout=10).returncode != 0
    server.start()
    try:
        assert server.cli("GET", "survives") == "restart"
    finally:
        server.stop()


@dataclass
class Container:
    """The state of a Dockerfile's stages replayed on this machine under `root`."""

    root: Path
    env: dict[str, str]
    workdir: Path
    healthcheck: list[str]
    command: list[str]


def replay_dockerfile(project: BakedProject, root: Path) -> Container:
    """Run the Dockerfile's build stage and assemble its runtime stage under `root`.

    Absolute paths of the image (WORKDIRs, the venv) are mapped under `root`; `python` is
    this machine's. Files come from the build context as .dockerignore leaves it.
    """
    _, stages = parse_dockerfile(project.read("Dockerfile"))
    text = project.read("Dockerfile")
    image_paths = set(re.findall(r"(?<![\w$.])(/(?:opt|src|app|srv|home)(?:/[\w.-]+)*)", text))
    image_paths = {p.removesuffix("/bin") for p in image_paths}

    alternatives = "|".join(map(re.escape, sorted(image_paths, key=len, reverse=True)))
    image_path = re.compile(rf"(?<![\w/])({alternatives})(?![\w-])")

    def remap(value: str) -> str:
        return image_path.sub(lambda m: str(root) + m.group(1), value)

    base_bin = root / "usr" / "local" / "bin"
    base_bin.mkdir(parents=True)
    (base_bin / "python").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    context = build_context(project.path)
    base_env = bot_env({"PATH": f"{base_bin}{os.pathsep}{os.environ['PATH']}"})

    def expand(value: str, env: Mapping[str, str]) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)

    container: Container | None = None
    for number, stage in enumerate(stages):
        env = dict(base_env)
        workdir = root
        final = number == len(stages) - 1
        healthcheck: list[str] = []
        command: list[str] = []
        for instruction in stage.instructions:
            keyword, args = instruction.keyword, instruction.args
            if keyword == "ENV":
                for pair in shlex.split(args):
                    name, _, value = pair.partition("=")
                    env[name] = expand(remap(value), env)
            elif keyword == "WORKDIR":
                workdir = Path(remap(args))
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY" and args.startswith("--from="):
                *sources, _ = args.split()[1:]
                for source in sources:
                    assert Path(remap(source)).exists(), f"COPY {args}: nothing at {source}"
            elif keyword == "COPY":
                *sources, dest = args.split()
                target = workdir / dest
                for source in sources:
                    prefix = "" if source == "." else source.rstrip("/")
                    files = [f for f in context if prefix in ("", f) or f.startswith(prefix + "/")]
                    assert files, f"COPY {args}: {source} is not in the build context"
                    for rel in files:
                        rel_target = rel if source == "." else rel[len(prefix) :].lstrip("/")
                        destination = target / (rel_target or Path(rel).name)
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(project.path / rel, destination)
            elif keyword == "RUN" and final:
                # The runtime stage may only create its user: not replayed on this machine.
                for part in args.split("&&"):
                    assert part.split()[0] in {"groupadd", "useradd"}, args
            elif keyword == "RUN":
                result = run(["/bin/sh", "-c", remap(args)], cwd=workdir, env=env)
                assert result.returncode == 0, output_tail(result)
            elif keyword == "HEALTHCHECK":
                healthcheck = Instruction("CMD", args.partition("CMD ")[2]).exec_form()
            elif keyword == "CMD":
                command = Instruction(keyword, args).exec_form()
        container = Container(root, env, workdir, healthcheck, command)
    assert container is not None
    return container


@pytest.fixture(scope="module")
def container(default_project: BakedProject, tmp_path_factory: pytest.TempPathFactory) -> Container:
    return replay_dockerfile(default_project, tmp_path_factory.mktemp("image"))


def in_container(
    container: Container, argv: list[str], settings: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(container.env)
    env.update(settings)
    return subprocess.run(
        argv, cwd=container.workdir, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def normalized_pin(pin: str) -> str:
    """`Name==version` with the name normalized as PEP 503 does (fluent.runtime, fluent-runtime)."""
    name, _, version = pin.strip().partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def marker_holds(requirement: str) -> bool:
    """Whether an exported requirement's environment marker holds on this machine's Python."""
    _, _, marker = requirement.partition(";")
    return Marker(marker.strip()).evaluate() if marker.strip() else True


@pytest.mark.slow
def test_dockerfile_installs_exactly_the_locked_packages(
    container: Container, default_project: BakedProject
) -> None:
    venv_python = shutil.which("python", path=container.env["PATH"])
    assert venv_python is not None
    assert str(container.root) in venv_python, "the image's PATH must put its venv first"
    where = in_container(
        container,
        ["python", "-c", f"import botnodes, {default_project.slug}; "
         f"print({default_project.slug}.__file__); print(botnodes.__file__)"],
        {},
    )  # fmt: skip
    assert where.returncode == 0, output_tail(where)
    # Installed into the venv (a wheel), not imported from the source tree.
    for line in where.stdout.splitlines():
        assert "site-packages" in line, line
    # No pip in a venv uv made: the distributions, as `name==version`, from importlib.metadata.
    listing = (
        "import importlib.metadata as m; "
        "print(*(f'{d.name}=={d.version}' for d in m.distributions()))"
    )
    frozen = in_container(container, ["python", "-c", listing], {})
    assert frozen.returncode == 0, output_tail(frozen)
    exported = default_project.run(
        tool("uv"), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"
    )
    assert exported.returncode == 0, output_tail(exported)
    pinned = {
        normalized_pin(requirement.split(";")[0])
        for requirement in exported.stdout.splitlines()
        if requirement.strip()
        and not requirement.lstrip().startswith("#")
        and marker_holds(requirement)
    }
    dist = default_project.slug.replace("_", "-")
    installed = {normalized_pin(line) for line in frozen.stdout.split()} - {
        normalized_pin(f"{dist}==0.1.0")
    }
    assert installed == pinned, f"lock drift: {installed ^ pinned}"


@pytest.mark.slow
def test_container_healthcheck_passes_with_redis_and_bot_api(
    container: Container, compose_redis: RedisFromCompose, bot_api: FakeBotAPI
) -> None:
    result = in_container(
        container,
        container.healthcheck,
        {"BOT_TOKEN": TOKEN, "REDIS_URL": compose_redis.url, "TELEGRAM_API_URL": bot_api.url},
    )
    assert result.returncode == 0, output_tail(result)
    assert bot_api.calls == ["getMe"]
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_container_healthcheck_fails_on_dead_redis_with_one_line(
    container: Container, bot_api: FakeBotAPI
) -> None:
    result = in_container(
        container,
        container.healthcheck,
        {
            "BOT_TOKEN": TOKEN,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "TELEGRAM_API_URL": bot_api.url,
        },
    )
    assert result.returncode == 1, output_tail(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Redis" in lines[0]
    assert TOKEN not in result.stderr


@pytest.mark.slow
def test_container_starts_polls_and_stops_within_the_grace_period(
    container: Container,
    compose: dict[str, Any],
    compose_redis: RedisFromCompose,
    bot_api: FakeBotAPI,
    tmp_path: Path,
) -> None:
    bot = compose["services"]["bot"]
    grace = parse_duration(bot["stop_grace_period"])
    env = dict(container.env)
    env.update(bot["environment"])
    env.update({"BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": bot_api.url})
    env["REDIS_URL"] = compose_redis.url  # compose's `redis` host is this machine here
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            container.command, cwd=container.workdir, env=env, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while "getUpdates" not in bot_api.calls and time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
            assert "getUpdates" in bot_api.calls, log.read_text()
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)  # what `docker stop` sends
            code = process.wait(timeout=grace)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log.read_text()
    assert code == 0, output
    assert time.monotonic() - started < grace
    assert TOKEN not in output


@pytest.mark.slow
def test_grace_period_exceeds_the_shutdown_timeout(
    installed_project: InstalledProject, compose: dict[str, Any]
) -> None:
    result = installed_project.run(
        "python", "-c",
        "from botnodes.telegram.settings import RuntimeSettings as R; "
        "print(R.model_fields['shutdown_timeout'].default)",
    )  # fmt: skip
    assert result.returncode == 0, output_tail(result)
    shutdown_timeout = float(result.stdout)
    grace = parse_duration(compose["services"]["bot"]["stop_grace_period"])
    # The bot also closes Redis and the HTTP session after the in-flight updates.
    assert grace >= shutdown_timeout + 5


@pytest.mark.slow
def test_workflow_steps_run_as_written(
    installed_project: InstalledProject, compose_redis: RedisFromCompose
) -> None:
    """Both jobs' `run:` steps, in order, in the installed bake, with this machine's Python.

    `uv sync --locked` turns the pip-made .venv into uv's: the README's two routes meet. uv is
    the test environment's (requirements-dev.txt pins the version the bake requires).
    """
    workflow = load_yaml(installed_project.baked.read(".github/workflows/ci.yml"))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    tools = str(Path(tool("uv")).parent)
    for name in ("lock", "check"):
        job = workflow["jobs"][name]
        env = {key: str(value) for key, value in job.get("env", {}).items()}
        if "UV_PYTHON" in env:
            env["UV_PYTHON"] = python  # this leg of the matrix
        if "REDIS_URL" in env:
            env["REDIS_URL"] = compose_redis.url  # the service container is this machine's redis
        project_env = installed_project.env()
        project_env["PATH"] = f"{project_env['PATH']}{os.pathsep}{tools}"
        steps = [step for step in job["steps"] if "run" in step]
        for step in steps:
            # GitHub runs a `run:` step as `bash -e {0}` in the checkout.
            result = run(
                ["bash", "-e", "-c", step["run"]],
                cwd=installed_project.path,
                env={**env, **project_env},
                timeout=1800,  # `pytest --all`: every tier of the defaults (about 11 min loaded)
            )
            assert result.returncode == 0, f"step {step.get('name')!r}:\n{output_tail(result)}"


def offline_pre_commit_config(project: BakedProject) -> str:
    """The project's hooks as `repo: local` hooks, so pre-commit runs them without a clone."""
    hooks = []
    for hook_id, hook in pre_commit_hooks(project).items():
        local: dict[str, Any] = {"id": hook_id, "name": hook_id, "language": "system"}
        if hook["repo"] == "local":
            local.update({k: v for k, v in hook.items() if k not in {"repo", "rev"}})
        elif hook_id in RUFF_HOOKS:
            local.update(entry=RUFF_HOOKS[hook_id], types_or=["python", "pyi"], require_serial=True)
        else:
            assert hook_id in HYGIENE_HOOKS, f"no offline mapping for hook {hook_id!r}"
            entry, types = HYGIENE_HOOKS[hook_id]
            local.update(entry=entry, types=types)
        if "args" in hook:
            local["args"] = hook["args"]
        hooks.append(local)
    return json.dumps({"repos": [{"repo": "local", "hooks": hooks}]})


@pytest.mark.slow
def test_pre_commit_hooks_pass_on_the_baked_project(
    installed_project: InstalledProject, tmp_path: Path
) -> None:
    baked = installed_project.baked
    validated = installed_project.run("pre-commit", "validate-config", ".pre-commit-config.yaml")
    assert validated.returncode == 0, output_tail(validated)
    rev = pre_commit_hooks(baked)["trailing-whitespace"]["rev"].lstrip("v")
    hygiene = installed_project.run("python", "-m", "pip", "install", "--quiet",
                                    f"pre-commit-hooks=={rev}")  # fmt: skip
    assert hygiene.returncode == 0, output_tail(hygiene)

    # A fresh checkout: the project's files in git, without the venv and caches.
    checkout = tmp_path / "checkout"
    shutil.copytree(
        baked.path, checkout,
        ignore=shutil.ignore_patterns(".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                      "__pycache__", "*.egg-info"),
    )  # fmt: skip
    config = tmp_path / "offline-pre-commit.yaml"
    config.write_text(offline_pre_commit_config(baked), encoding="utf-8")
    env = installed_project.env({
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    })  # fmt: skip
    for argv in (["git", "init", "-q"], ["git", "add", "-A"]):
        result = run(argv, cwd=checkout, env=env)
        assert result.returncode == 0, output_tail(result)
    hooks = run(
        ["pre-commit", "run", "--all-files", "--show-diff-on-failure", "-c", str(config)],
        cwd=checkout,
        env=env,
    )
    assert hooks.returncode == 0, output_tail(hooks, 120)
    for hook_id in pre_commit_hooks(baked):
        assert re.search(rf"^{re.escape(hook_id)}\.+(Passed|\(no files to check\)Skipped)$",
                         hooks.stdout, re.M), f"{hook_id} did not run:\n{hooks.stdout}"  # fmt: skip
