"""The container files name real things: commands, settings, ports, files and services.

No Docker engine runs here, so docker-compose.yml (parsed with PyYAML) and the Dockerfile are
checked against the code: every ``imaging-hub`` command they run is a command of the CLI,
every ``HUB_*`` variable is a field of ``Settings``, published ports are the settings'
defaults, and the compose file has the shape ``docker compose config`` accepts.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from imaging_hub.cli import main
from imaging_hub.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
OPERATIONS = ROOT / "docs" / "operations.md"

#: hub service -> the ``imaging-hub`` arguments it must run.
HUB_SERVICES = {
    "hub-migrate": ["db", "upgrade"],
    "hub-scp": ["scp"],
    "hub-api": ["api"],
    "hub-worker": ["worker"],
}
ONE_SHOT = "hub-migrate"
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "configs"}
TOP_LEVEL_KEYS |= {"secrets", "models"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
HUB_VAR = re.compile(r"\bHUB_[A-Z0-9_]+\b")
# A command written in prose or comments, e.g. "`imaging-hub db upgrade`".
MENTION = re.compile(r"\bimaging-hub[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")


# --- reading the files -------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    """The compose file as data (YAML anchors and merge keys resolved)."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    found = load_compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage, starting with its FROM."""
    instructions = dockerfile_instructions()
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def argv(value: str | list[str] | None) -> list[str]:
    """A command in exec form (JSON or YAML list) or shell form, as a list of words."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(word) for word in value]
    text = value.strip()
    if text.startswith("["):
        return [str(word) for word in json.loads(text)]
    return shlex.split(text)


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    """The arguments of the stage's last instruction of this kind (the one in force)."""
    values = [rest for kw, rest in stage if kw == keyword]
    return values[-1] if values else None


def dockerfile_env() -> dict[str, str]:
    """The ENV values the final image has."""
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword != "ENV":
            continue
        words = shlex.split(rest)
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def builds_here(service: dict[str, Any]) -> bool:
    """True when the service's image is built from this repository's Dockerfile."""
    build = service.get("build")
    if build is None:
        return False
    _, dockerfile = build_paths(build)
    return dockerfile.resolve() == DOCKERFILE.resolve()


def build_paths(build: str | dict[str, Any]) -> tuple[Path, Path]:
    """The build context and the Dockerfile a compose ``build`` entry names."""
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def service_argv(service: dict[str, Any]) -> list[str]:
    """What a service's container runs: its entrypoint and command, or the image's."""
    image = final_stage() if builds_here(service) else []
    if "entrypoint" in service:
        # Compose drops the image's CMD when it overrides the entrypoint.
        return argv(service["entrypoint"]) + argv(service.get("command"))
    entrypoint = argv(last(image, "ENTRYPOINT"))
    command = service["command"] if "command" in service else last(image, "CMD")
    return entrypoint + argv(command)


def hub_arguments(words: list[str]) -> list[str] | None:
    """The arguments given to ``imaging-hub`` in a command line, or None if it runs none."""
    if not words:
        return None
    program = Path(words[0]).name
    if program in {"sh", "bash"} and "-c" in words:
        return hub_arguments(shlex.split(words[words.index("-c") + 1]))
    if program == "imaging-hub":
        rest = words[1:]
    elif program.startswith("python") and words[1:3] == ["-m", "imaging_hub"]:
        rest = words[3:]
    else:
        return None
    while rest and rest[0].startswith("--config"):  # the group's only option
        rest = rest[1:] if "=" in rest[0] else rest[2:]
    return rest


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def container_ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """A service's ports as (published host port or None, container port)."""
    result: list[tuple[str | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            result.append((None if published is None else str(published), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        result.append((parts[-2] if len(parts) > 1 else None, int(parts[-1])))
    return result


def entry_points() -> dict[str, str]:
    """The front ends' commands: the ``imaging_hub.commands`` table of pyproject.toml."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return dict(project["entry-points"]["imaging_hub.commands"])


def command_problem(args: list[str] | None) -> str | None:
    """Why these ``imaging-hub`` arguments are not a real command, or None if they are."""
    if not args:
        return "no command given to imaging-hub"
    name, rest = args[0], args[1:]
    if name in entry_points():
        return None
    command = main.commands.get(name)
    if command is None:
        known = sorted(set(main.commands) | set(entry_points()))
        return f"imaging-hub has no command {name!r} (it has {known})"
    if isinstance(command, click.Group):
        if not rest:
            return f"imaging-hub {name} needs a subcommand"
        if rest[0] not in command.commands:
            return f"imaging-hub {name} has no subcommand {rest[0]!r}"
    return None


def setting_names() -> set[str]:
    """Every environment variable the settings read: HUB_ + the upper-cased field name."""
    return {f"HUB_{name.upper()}" for name in Settings.model_fields}


def default(field: str) -> Any:
    """A setting's default value."""
    return Settings.model_fields[field].default


# --- the compose file --------------------------------------------------------------------


def test_compose_file_has_the_shape_compose_accepts() -> None:
    data = load_compose()
    unknown = {key for key in data if not key.startswith("x-")} - TOP_LEVEL_KEYS
    assert not unknown, f"unknown top-level keys {unknown}"
    declared = set(data.get("volumes") or {})
    all_services = services()
    for name, service in all_services.items():
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", name), f"bad service name {name!r}"
        assert isinstance(service, dict), f"{name} is not a mapping"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source = volume.get("source") if volume.get("type") == "volume" else None
            else:
                source = str(volume).split(":")[0] if ":" in str(volume) else None
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
        depends = service.get("depends_on") or {}
        for target in depends:
            assert target in all_services, f"{name} depends on unknown service {target!r}"
            if isinstance(depends, dict):
                condition = depends[target].get("condition")
                assert condition in CONDITIONS, f"{name} -> {target}: bad condition {condition}"
                if condition == "service_healthy":
                    assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            assert isinstance(test, str) or test[0] in {"CMD", "CMD-SHELL", "NONE"}, name


def test_every_image_exists_or_is_built_from_an_existing_dockerfile() -> None:
    for name, service in services().items():
        if "build" in service:
            context, dockerfile = build_paths(service["build"])
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        else:
            image = service.get("image", "")
            # A pinned, well-formed reference: name:tag, never an implicit or explicit latest.
            assert re.fullmatch(r"[a-z0-9][a-z0-9./_-]*:[\w][\w.-]*", image), (name, image)
            assert not image.endswith(":latest"), f"{name}: pin a version, not {image}"
    assert services()["postgres"]["image"].startswith("postgres:16")
    assert services()["redis"]["image"].startswith("redis:7")


def test_hub_services_run_the_right_real_commands() -> None:
    all_services = services()
    assert set(HUB_SERVICES) <= set(all_services), "a hub service is missing"
    for name, service in all_services.items():
        args = hub_arguments(service_argv(service))
        if name in HUB_SERVICES:
            assert builds_here(service), f"{name} is not built from {DOCKERFILE.name}"
            assert args == HUB_SERVICES[name], f"{name} runs {args}"
        if args is not None:
            assert command_problem(args) is None, f"{name}: {command_problem(args)}"


def test_every_imaging_hub_command_mentioned_is_real() -> None:
    for path in (COMPOSE, DOCKERFILE):
        mentions = MENTION.findall(path.read_text(encoding="utf-8"))
        for first, second in mentions:
            args = [first, second] if second else [first]
            problem = command_problem(args)
            # A second word after a plain command may be an argument, not a subcommand.
            if problem and second and not isinstance(main.commands.get(first), click.Group):
                problem = command_problem([first])
            where = f"{path.name} mentions `imaging-hub {' '.join(args)}`"
            assert problem is None, f"{where}: {problem}"


def test_front_end_commands_have_their_modules() -> None:
    points = entry_points()
    assert {"scp", "api", "worker"} <= set(points)
    for name, target in points.items():
        assert name not in main.commands, f"entry point {name!r} is shadowed by a built-in"
        module, _, attribute = target.partition(":")
        base = ROOT / Path(*module.split("."))
        module_file = base.with_suffix(".py")
        path = module_file if module_file.is_file() else base / "__init__.py"
        assert path.is_file(), f"{target}: {base}.py does not exist (yet)"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.ImportFrom | ast.Import):
                defined |= {alias.asname or alias.name for alias in node.names}
        assert attribute in defined, f"{path.relative_to(ROOT)} does not define {attribute}"


def test_every_hub_variable_named_is_a_setting() -> None:
    named: set[str] = set()
    for path in (COMPOSE, DOCKERFILE):
        named |= set(HUB_VAR.findall(path.read_text(encoding="utf-8")))
    assert {"HUB_DATABASE_URL", "HUB_BROKER_URL"} <= named
    unknown = named - setting_names()
    assert not unknown, f"not settings: {sorted(unknown)}"


def test_hub_services_wait_for_healthy_backends_and_migrations() -> None:
    all_services = services()
    assert "pg_isready" in argv(all_services["postgres"]["healthcheck"]["test"])
    assert argv(all_services["redis"]["healthcheck"]["test"])[-2:] == ["redis-cli", "ping"]
    for name in HUB_SERVICES:
        depends = all_services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        wanted = {"postgres": "service_healthy"}
        if name != ONE_SHOT:
            wanted |= {"redis": "service_healthy", ONE_SHOT: "service_completed_successfully"}
        for target, condition in wanted.items():
            got = (depends.get(target) or {}).get("condition")
            assert got == condition, f"{name} -> {target}: {got}, want {condition}"
        env = environment(all_services[name])
        assert env.get("HUB_DATABASE_URL", "").startswith("postgresql+psycopg://"), name
        assert env.get("HUB_BROKER_URL", "").startswith("redis://"), name
    assert all_services[ONE_SHOT].get("restart", "no") in {"no", False}, "migrations run once"


def test_hub_services_share_one_data_volume_at_the_data_dir() -> None:
    all_services = services()
    declared = set(load_compose().get("volumes") or {})
    mounts = set()
    for name in HUB_SERVICES:
        service = all_services[name]
        data_dir = environment(service).get("HUB_DATA_DIR") or dockerfile_env()["HUB_DATA_DIR"]
        named = [str(v).split(":") for v in service.get("volumes") or [] if ":" in str(v)]
        at_data = [(source, target) for source, target, *_ in named if target == data_dir]
        assert len(at_data) == 1, f"{name} mounts nothing at HUB_DATA_DIR={data_dir}"
        mounts.add(at_data[0])
    assert len(mounts) == 1, f"hub services mount different data volumes: {mounts}"
    assert next(iter(mounts))[0] in declared


def test_workers_are_replicated() -> None:
    worker = services()["hub-worker"]
    replicas = (worker.get("deploy") or {}).get("replicas", 1)
    assert isinstance(replicas, int) and replicas >= 2, f"hub-worker replicas: {replicas}"
    # Replicas cannot share a container name or a published host port.
    assert "container_name" not in worker
    assert all(published is None for published, _ in container_ports(worker))


def test_published_ports_match_the_settings() -> None:
    all_services = services()
    expected = {
        "hub-scp": ("HUB_DICOM_PORT", default("dicom_port")),
        "hub-api": ("HUB_HTTP_PORT", default("http_port")),
    }
    for name, (variable, port) in expected.items():
        want = int(environment(all_services[name]).get(variable) or port)
        got = {target for _, target in container_ports(all_services[name])}
        assert got == {want}, f"{name} exposes {got}, the hub listens on {want}"
    exposed = {int(p.split("/")[0]) for p in (last(final_stage(), "EXPOSE") or "").split()}
    assert exposed == {default("dicom_port"), default("http_port")}, exposed


def test_api_has_a_healthcheck_on_healthz() -> None:
    api = services()["hub-api"]
    assert "healthcheck" in api, "hub-api has no healthcheck"
    test = argv(api["healthcheck"]["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    # Slim Python images have neither curl nor wget.
    assert Path(shlex.split(" ".join(test[1:]))[0]).name.startswith("python"), test
    port = int(environment(api).get("HUB_HTTP_PORT") or default("http_port"))
    assert re.search(rf"//(127\.0\.0\.1|localhost):{port}/healthz\b", " ".join(test)), test


# --- the Dockerfile ----------------------------------------------------------------------


def test_dockerfile_default_command_is_serve() -> None:
    stage = final_stage()
    words = argv(last(stage, "ENTRYPOINT")) + argv(last(stage, "CMD"))
    args = hub_arguments(words)
    assert command_problem(args) is None, command_problem(args)
    assert args == ["serve"], f"default command: {words}"


def test_dockerfile_installs_the_project_and_runs_as_non_root_on_data() -> None:
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim", stage[0]
    runs = " ".join(rest for kw, rest in dockerfile_instructions() if kw == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs), "no `pip install .`"
    user = last(stage, "USER")
    assert user is not None and user.split(":")[0] not in {"root", "0"}, f"USER {user}"
    env = dockerfile_env()
    assert env.get("HUB_DATA_DIR") == "/data"
    assert env.get("HUB_HTTP_HOST") == "0.0.0.0", "the API must listen beyond the container"
    assert "/data" in argv(last(stage, "VOLUME")), "no VOLUME /data"


# --- the operator guide ------------------------------------------------------------------


def test_operations_guide_documents_exactly_the_settings() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    named = set(HUB_VAR.findall(text))
    assert not named - setting_names(), f"not settings: {sorted(named - setting_names())}"
    assert not setting_names() - named, f"undocumented: {sorted(setting_names() - named)}"


def test_operations_guide_gives_the_real_defaults() -> None:
    rows = re.findall(r"^\| `(HUB_[A-Z0-9_]+)` \| `([^`]+)`", OPERATIONS.read_text("utf-8"), re.M)
    assert len(rows) >= 10, "the settings table has too few literal defaults"
    for variable, documented in rows:
        value = default(variable.removeprefix("HUB_").lower())
        real = f"./{value}" if isinstance(value, Path) and not value.is_absolute() else str(value)
        assert documented == real, f"{variable}: documented {documented!r}, default {real!r}"


def test_operations_guide_toml_examples_load(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", OPERATIONS.read_text("utf-8"), re.S)
    assert blocks, "no TOML example"
    for number, block in enumerate(blocks):
        path = tmp_path / f"example{number}.toml"
        path.write_text(block, encoding="utf-8")
        load_settings(path)  # raises ConfigError naming what is wrong


@pytest.mark.parametrize(
    ("args", "ok"),
    [
        (["serve"], True),
        (["db", "upgrade"], True),
        (["db", "downgrade"], False),
        (["db"], False),
        (["jobs", "retry"], True),
        (["worker"], True),
        (["frobnicate"], False),
        ([], False),
    ],
)
def test_command_check_tells_real_from_unknown(args: list[str], ok: bool) -> None:
    assert (command_problem(args) is None) == ok
