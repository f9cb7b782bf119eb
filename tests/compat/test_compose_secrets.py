"""docker-compose.yml's secrets, checked without Docker: .env.example's empty passwords make
compose refuse to start; no command or healthcheck carries a secret in argv; and the sink's
MongoDB user (deploy/mongodb/initdb) may insert and create indexes in the topology's database,
and nothing else, in a mongod with access control on (mongodb.py)."""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest

from compose import InterpolationError, as_mapping, empty_secrets, load_compose, parse_env_file
from mongodb import INIT_SCRIPT, Mongod, SinkGrant, is_unauthorized
from support import Settings

COMPOSE_FILE = "docker-compose.yml"


def test_env_example_as_shipped_is_refused(settings: Settings) -> None:
    """Copied to .env unchanged, .env.example must not start the stack: each empty secret is
    refused by name, as `docker compose` refuses `${NAME:?…}` with an empty value."""
    example = parse_env_file((settings.root / ".env.example").read_text())
    names = empty_secrets(settings.root)
    assert {"MONGO_ROOT_PASSWORD", "MONGO_SINK_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= set(names)
    filled = {**example, **{name: "compat-filled" for name in names}}
    load_compose(settings.root / COMPOSE_FILE, filled)  # with every secret set, it loads
    for name in names:
        for left in ({**filled, name: ""}, {k: v for k, v in filled.items() if k != name}):
            with pytest.raises(InterpolationError, match=name):
                load_compose(settings.root / COMPOSE_FILE, left)
    with pytest.raises(InterpolationError):
        load_compose(settings.root / COMPOSE_FILE, example)


def test_every_secret_is_read_as_required(settings: Settings) -> None:
    """`${NAME:?…}` wherever a secret is read: `${NAME}`, `${NAME-…}` or `${NAME?…}` would let
    an empty password through to MongoDB or Grafana."""
    text = (settings.root / COMPOSE_FILE).read_text()
    for name in empty_secrets(settings.root):
        operators = re.findall(rf"(?<!\$)\$\{{{name}(:?[-?+]|\}})", text)
        assert operators, f"{COMPOSE_FILE} never reads {name}"
        assert set(operators) == {":?"}, f"{COMPOSE_FILE} reads {name} with {operators}, not :?"


def argv_strings(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, text) of everything a service puts in a process's argv: entrypoint, command,
    healthcheck test."""
    found = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        found += [(key, v) for v in ([value] if isinstance(value, str) else value)]
    test = (service.get("healthcheck") or {}).get("test") or []
    found += [("healthcheck", v) for v in ([test] if isinstance(test, str) else test)]
    return found


def secrets_in_argv(project: Mapping[str, Any], secret_values: set[str]) -> list[str]:
    """Where a secret would reach argv: its value written into a command, or a shell string
    expanding an environment variable that holds one (`$$VAR` in compose is `$VAR` there)."""
    problems = []
    for name, service in project["services"].items():
        environment = as_mapping(service.get("environment"))
        holding = {k for k, v in environment.items() if any(s in v for s in secret_values)}
        for where, text in argv_strings(service):
            if any(s in text for s in secret_values):
                problems.append(f"{name} {where}: a secret value in argv")
            for variable in holding:
                if re.search(rf"\$\{{?{variable}\b", text):
                    problems.append(f"{name} {where}: expands ${variable} into argv")
    return problems


def test_no_secret_reaches_argv(settings: Settings, compose_env: dict[str, str]) -> None:
    secret_values = {compose_env[name] for name in empty_secrets(settings.root)}
    project, _ = load_compose(settings.root / COMPOSE_FILE, compose_env)
    assert secrets_in_argv(project, secret_values) == []
    # The check itself: the healthcheck this replaced (`mongosh -p "$$MONGO_INITDB_ROOT_…"`).
    old = dict(project["services"]["mongodb"])
    old["healthcheck"] = {
        "test": ["CMD-SHELL", 'mongosh -u admin -p "$MONGO_INITDB_ROOT_PASSWORD" --eval 1']
    }
    broken = {"services": {**project["services"], "mongodb": old}}
    assert secrets_in_argv(broken, secret_values) == [
        "mongodb healthcheck: expands $MONGO_INITDB_ROOT_PASSWORD into argv"
    ]
    # The image's own HEALTHCHECK and ENTRYPOINT take no arguments that could hold one.
    dockerfile = (settings.root / "Dockerfile").read_text()
    assert not re.search(r"(?m)^(HEALTHCHECK|ENTRYPOINT|CMD)\b.*\$", dockerfile)


def sink_client(project: Mapping[str, Any], mongod: Mongod) -> pymongo.MongoClient:
    """The sink service's own TICKSTREAM_MONGODB_URI, pointed at the test's mongod."""
    uri = as_mapping(project["services"]["sink"]["environment"])["TICKSTREAM_MONGODB_URI"]
    assert "mongodb:27017" in uri, uri
    return pymongo.MongoClient(
        uri.replace("mongodb:27017", mongod.address), serverSelectionTimeoutMS=5000
    )


def topology_database(settings: Settings, project: Mapping[str, Any]) -> str:
    """The `[mongodb] database` of the topology the sink service runs."""
    path = as_mapping(project["services"]["sink"]["environment"])["TICKSTREAM_TOPOLOGY"]
    inside = "/etc/tickstream/topologies/"
    assert path.startswith(inside), path
    topology = tomllib.loads((settings.root / "topologies" / path[len(inside) :]).read_text())
    return topology.get("mongodb", {}).get("database", "tickstream")


def test_sink_user_may_only_insert_and_index(
    settings: Settings,
    compose_env: dict[str, str],
    compose_mongod: Mongod,
    compose_mongo: pymongo.MongoClient,
) -> None:
    project, _ = load_compose(settings.root / COMPOSE_FILE, compose_env)
    grant = SinkGrant.from_script(settings.root / INIT_SCRIPT)
    database = topology_database(settings, project)
    mongodb_environment = as_mapping(project["services"]["mongodb"]["environment"])
    assert set(grant.environment) <= set(mongodb_environment), (
        f"{INIT_SCRIPT} reads {grant.environment}; the mongodb service sets "
        f"{sorted(mongodb_environment)}"
    )
    assert mongodb_environment["MONGO_INITDB_SINK_DATABASE"] == database, (
        "the sink's user is granted a database other than its topology's"
    )
    collection = f"compat_grant_{uuid.uuid4().hex[:8]}"
    with sink_client(project, compose_mongod) as sink:
        status = sink.admin.command("connectionStatus", showPrivileges=True)["authInfo"]
        assert status["authenticatedUserRoles"] == [{"role": grant.role, "db": "admin"}]
        assert [
            (p["resource"], sorted(p["actions"])) for p in status["authenticatedUserPrivileges"]
        ] == [({"db": database, "collection": ""}, sorted(grant.actions))]
        try:
            # What the sink does: indexes at start-up, then unordered inserts.
            own = sink[database][collection]
            own.create_index([("symbol", 1), ("ts", -1)])
            own.insert_many([{"_id": 1, "symbol": "X"}, {"_id": 2, "symbol": "Y"}], ordered=False)
            refused = {
                "find": lambda: own.find_one(),
                "update": lambda: own.update_one({"_id": 1}, {"$set": {"symbol": "Z"}}),
                "delete": lambda: own.delete_one({"_id": 1}),
                "drop collection": lambda: own.drop(),
                "drop its database": lambda: sink.drop_database(database),
                "drop another database": lambda: sink.drop_database("compat_other"),
                "insert elsewhere": lambda: sink["compat_other"]["x"].insert_one({}),
                "create a user": lambda: sink.admin.command(
                    "createUser", "intruder", pwd=uuid.uuid4().hex, roles=["root"]
                ),
                "shut the server down": lambda: sink.admin.command("shutdown"),
            }
            allowed = [what for what, action in refused.items() if not is_unauthorized(action)]
            assert not allowed, f"the sink's user may also: {allowed}"
        finally:
            compose_mongo[database].drop_collection(collection)
    assert compose_mongo[database][collection].estimated_document_count() == 0


def test_root_user_is_not_the_sinks(settings: Settings, compose_env: dict[str, str]) -> None:
    project, _ = load_compose(settings.root / COMPOSE_FILE, compose_env)
    uri = urlsplit(as_mapping(project["services"]["sink"]["environment"])["TICKSTREAM_MONGODB_URI"])
    credentials = [uri.username, uri.password]
    assert credentials == [compose_env["MONGO_SINK_USERNAME"], compose_env["MONGO_SINK_PASSWORD"]]
    assert compose_env["MONGO_SINK_USERNAME"] != compose_env["MONGO_ROOT_USERNAME"]
    assert "authSource=admin" in uri.query, "the sink's user is created in admin"


def test_init_script_is_mounted_where_the_image_runs_it(settings: Settings) -> None:
    project, _ = load_compose(settings.root / COMPOSE_FILE, {
        name: "x" for name in [*empty_secrets(settings.root), "MONGO_ROOT_USERNAME",
                               "MONGO_SINK_USERNAME", "GRAFANA_ADMIN_USER"]
    })  # fmt: skip
    volumes = project["services"]["mongodb"]["volumes"]
    initdb = f"./{INIT_SCRIPT.parent}:/docker-entrypoint-initdb.d:ro"
    assert initdb in volumes, f"the mongodb service does not mount {INIT_SCRIPT.parent}: {volumes}"
    check = project["services"]["mongodb"]["healthcheck"]["test"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in volumes if v.startswith("./")}
    assert check[0] == "CMD" and check[-1] in mounted, f"healthcheck {check} runs no mounted file"
    assert (settings.root / mounted[check[-1]]).is_file()
