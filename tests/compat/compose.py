"""docker-compose.yml without Docker: read it as Compose does, then run its tickstream services
as host processes.

Reading follows the Compose Specification: YAML anchors and merge keys (`<<: *processor`),
`.env` interpolation (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
`${VAR?message}`, `${VAR:+alt}`, `$$` for a literal `$`) of every value, `depends_on` with
its conditions. Running maps only what a host must:

  * the image (the Dockerfile's runtime stage): its ENTRYPOINT, ENV, WORKDIR, the files it
    COPYs, each a symlink at its container path under a per-service root (`/usr/local/bin/
    tickstream` to the debug binary, `/usr/local/bin/tickstream-entrypoint` to
    deploy/docker/entrypoint.sh, which finds the binary beside itself as in the image,
    `/etc/tickstream/topologies/` to ./topologies), and its VOLUMEs (a temp dir per service);
  * service host names: `kafka:9092` and `mongodb:27017` become the test broker and the test's
    access-controlled mongod (mongodb.py);
  * listen addresses `0.0.0.0:PORT` become `127.0.0.1:<a free port>`, one per service.

Everything else — command, environment, start order, one-shot exits, healthchecks — is the
file's own. What this cannot check without Docker: the image build, container networking and
DNS, volumes and their ownership, restart policies, resource limits.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from support import (
    Process,
    ProcessSet,
    WaitTimeout,
    free_port,
    http_status,
    wait_until,
)

# Services the host provides (make services-up) instead of compose.
HOST_SERVICES = {"kafka", "mongodb"}
# What the tickstream services are built as (x-processor's image).
TICKSTREAM_IMAGE = "tickstream:local"


class InterpolationError(ValueError):
    """What `docker compose` refuses to start with, e.g. a required variable left unset."""


class ComposeFailure(AssertionError):
    """The stack did not come up: which service, why, and its log."""

    def __init__(self, service: str, reason: str, log: str = "") -> None:
        super().__init__(f"service {service}: {reason}" + (f"\n{log}" if log else ""))
        self.service = service
        self.reason = reason


# --- reading ------------------------------------------------------------------------------


def parse_env_file(text: str) -> dict[str, str]:
    """A compose `.env`: KEY=VALUE lines, `#` comments, optional quotes."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise InterpolationError(f".env line {number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# A secret in .env.example: a password left empty, which compose's `:?` refuses until .env
# sets it.
EMPTY_SECRET = re.compile(r"(?m)^(\w*PASSWORD\w*)=$")


def empty_secrets(root: Path) -> list[str]:
    """The variables .env.example leaves empty for the user to fill in."""
    return EMPTY_SECRET.findall((root / ".env.example").read_text())


_VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str], unset: set[str]) -> str:
    """One string, as compose interpolates it; names used but unset are added to `unset`
    (compose warns about them and substitutes "")."""

    def replace(m: re.Match[str]) -> str:
        if m["dollar"]:
            return "$"
        if m["plain"]:
            return lookup(m["plain"])
        braced = _BRACED.fullmatch(m["braced"])
        if braced is None:
            raise InterpolationError(f"invalid interpolation format: {m[0]!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        value = env.get(name)
        present, non_empty = value is not None, bool(value)
        match op:
            case None:
                return lookup(name)
            case ":-":
                return value if non_empty else interpolate(arg, env, unset)
            case "-":
                return value if present else interpolate(arg, env, unset)
            case ":?" | "?":
                if (op == ":?" and not non_empty) or not present:
                    raise InterpolationError(f"required variable {name} is missing a value: {arg}")
                return value
            case ":+":
                return interpolate(arg, env, unset) if non_empty else ""
            case "+":
                return interpolate(arg, env, unset) if present else ""
        raise AssertionError(op)

    def lookup(name: str) -> str:
        if name not in env:
            unset.add(name)
        return env.get(name, "")

    return _VARIABLE.sub(replace, text)


def interpolate_all(node: Any, env: Mapping[str, str], unset: set[str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, unset)
    if isinstance(node, list):
        return [interpolate_all(v, env, unset) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_all(v, env, unset) for k, v in node.items()}
    return node


def load_compose(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """The interpolated project (anchors and merge keys resolved by PyYAML's safe loader), and
    the variables it read that `env` does not set."""
    unset: set[str] = set()
    project = interpolate_all(yaml.safe_load(path.read_text()), env, unset)
    return project, unset


def as_mapping(value: Any) -> dict[str, str]:
    """`environment` as a mapping or a `KEY=VALUE` list, values as strings."""
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in value)
    return {k: "" if v is None else str(v) for k, v in value.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (`service_started` for the short list form)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def seconds(duration: str | None, default: float) -> float:
    """A compose duration such as `5s`, `1m30s`, `500ms`."""
    if not duration:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, f"unreadable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- the image ----------------------------------------------------------------------------


@dataclass
class Image:
    """The runtime stage of the Dockerfile: what a container of the image starts with."""

    entrypoint: list[str]
    env: dict[str, str]
    workdir: str
    copies: dict[str, str]  # container path -> build-context path ("" for --from=build)
    volumes: list[str]

    @classmethod
    def from_dockerfile(cls, path: Path) -> Image:
        lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
        stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
        image = cls(entrypoint=[], env={}, workdir="/", copies={}, volumes=[])
        for line in lines[stages[-1] :]:
            word, _, rest = line.strip().partition(" ")
            match word.upper():
                case "ENV":
                    image.env.update(kv.split("=", 1) for kv in shlex.split(rest))
                case "WORKDIR":
                    image.workdir = rest.strip()
                case "ENTRYPOINT":
                    image.entrypoint = json.loads(rest)
                case "VOLUME":
                    image.volumes += (
                        json.loads(rest) if rest.lstrip().startswith("[") else rest.split()
                    )
                case "COPY":
                    args = rest.split()
                    from_stage = any(a.startswith("--from") for a in args)
                    paths = [a for a in args if not a.startswith("--")]
                    for source in paths[:-1]:
                        image.copies[paths[-1]] = "" if from_stage else source
        return image


# --- mapping a container onto the host ----------------------------------------------------


@dataclass
class Host:
    """How this machine stands in for the containers."""

    root: Path
    binary: Path
    brokers: str
    mongodb_uri: str
    scratch: Path  # per-service dirs for WORKDIR, VOLUMEs and HOME

    def addresses(self) -> dict[str, str]:
        """`service:port` inside the compose network -> where the host runs it."""
        return {
            "kafka:9092": self.brokers,
            "mongodb:27017": urlsplit(self.mongodb_uri).netloc.rsplit("@", 1)[-1],
        }

    def paths(self, image: Image, service: str) -> list[tuple[str, str]]:
        """Container path prefix -> host path, longest first."""
        own = self.scratch / service
        dirs = {image.workdir: own / "work"}
        for volume in image.volumes:
            dirs[volume] = own / "volumes" / volume.strip("/").replace("/", "_")
        for host_dir in dirs.values():
            host_dir.mkdir(parents=True, exist_ok=True)
        mapping = {inside: str(outside) for inside, outside in dirs.items()}
        for target, source in image.copies.items():
            if source == "":  # COPY --from=build: the binary the build stage compiled
                assert target.endswith("/tickstream"), f"unknown build output {target}"
                origin = self.binary
            else:
                origin = self.root / source
            # At its container path under the service's root, so files COPYed side by side
            # find each other as they do in the image.
            placed = own / "rootfs" / target.strip("/")
            placed.parent.mkdir(parents=True, exist_ok=True)
            if not placed.is_symlink():
                placed.symlink_to(origin.resolve())
            mapping[target.rstrip("/")] = str(placed)
        return sorted(mapping.items(), key=lambda kv: -len(kv[0]))

    def map_value(self, value: str, paths: list[tuple[str, str]]) -> str:
        for inside, outside in self.addresses().items():
            value = re.sub(rf"(?<![\w.-]){re.escape(inside)}(?!\d)", outside, value)
        for inside, outside in paths:
            if value == inside or value.startswith(inside + "/"):
                return outside + value[len(inside) :]
        return value


@dataclass
class Container:
    """One service, mapped: what to run, with which environment, where."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str] | None
    healthcheck_timeout: float
    one_shot: bool
    depends_on: dict[str, str]

    @property
    def metrics_addr(self) -> str | None:
        return self.env.get("TICKSTREAM_METRICS_ADDR")


def healthcheck_argv(check: dict[str, Any]) -> list[str] | None:
    """What a healthcheck runs: `["CMD", ...]` as is, `["CMD-SHELL", cmd]` (or a string) via
    /bin/sh; None for `disable: true` or `["NONE"]`."""
    test = None if check.get("disable") else check.get("test")
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    assert test[0] == "CMD", f"unknown healthcheck test {test}"
    return test[1:]


def container(name: str, service: dict[str, Any], image: Image, host: Host) -> Container:
    paths = host.paths(image, name)
    env = {**image.env, **as_mapping(service.get("environment"))}
    for key, value in env.items():
        if re.fullmatch(r"0\.0\.0\.0:\d+", value):
            env[key] = f"127.0.0.1:{free_port()}"
    env = {k: host.map_value(v, paths) for k, v in env.items()}
    home = host.map_value(image.workdir, paths)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, **env}
    command = service.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else command
    entrypoint = service.get("entrypoint") or image.entrypoint
    argv = [host.map_value(a, paths) for a in [*entrypoint, *command]]
    check = service.get("healthcheck") or {}
    test = healthcheck_argv(check)
    return Container(
        name=name,
        argv=argv,
        env=env,
        cwd=Path(home),
        healthcheck=None if test is None else [host.map_value(a, paths) for a in test],
        healthcheck_timeout=seconds(check.get("timeout"), 30),
        one_shot=str(service.get("restart", "no")) == "no",
        depends_on=depends_on(service),
    )


def tickstream_containers(
    project: dict[str, Any], image: Image, host: Host
) -> dict[str, Container]:
    """The services run from the tickstream image, in a start order `depends_on` allows."""
    services = project["services"]
    ours = {n for n, s in services.items() if s.get("image") == TICKSTREAM_IMAGE}
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        if name in order:
            return
        for dep in depends_on(services[name]):
            assert dep in services, f"{name} depends on {dep}, which is not a service"
            if dep in ours:
                visit(dep, (*path, name))
            else:
                assert dep in HOST_SERVICES, (
                    f"{name} depends on {dep}, which neither runs from the tickstream image nor is "
                    f"provided by the host ({sorted(HOST_SERVICES)}): teach tests/compat/compose.py"
                )
        order.append(name)

    for name in services:
        if name in ours:
            visit(name, ())
    return {name: container(name, services[name], image, host) for name in order}


# --- running ------------------------------------------------------------------------------


@dataclass
class Exercise:
    """`docker compose up` of the tickstream services, as host processes."""

    containers: dict[str, Container]
    processes: ProcessSet
    one_shot_timeout: float = 45.0
    healthy_timeout: float = 30.0
    ready_timeout: float = 30.0
    running: dict[str, Process] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)
    healthy: set[str] = field(default_factory=set)

    def up(self) -> None:
        """Starts every service once its dependencies meet their conditions, waits for the
        one-shots to exit 0, then for every long-running service's healthcheck to pass and
        its /readyz to answer 200. Raises ComposeFailure naming the service at fault."""
        for name, c in self.containers.items():
            for dep, condition in c.depends_on.items():
                if dep in self.containers:
                    self._satisfy(dep, condition)
            self.running[name] = self.processes.start(name, c.argv, env=c.env, cwd=c.cwd)
        for name, c in self.containers.items():
            if c.one_shot:
                self._satisfy(name, "service_completed_successfully")
        for name, c in self.containers.items():
            if not c.one_shot:
                self._satisfy(name, "service_healthy")
        for name, c in self.containers.items():
            if not c.one_shot:
                self._wait_ready(name)

    def _satisfy(self, name: str, condition: str) -> None:
        match condition:
            case "service_started":
                return
            case "service_completed_successfully":
                self._wait_completed(name)
            case "service_healthy":
                self._wait_healthy(name)
            case _:
                raise AssertionError(f"unknown depends_on condition {condition!r}")

    def _wait_completed(self, name: str) -> None:
        if name in self.completed:
            return
        process = self.running[name]
        try:
            code = process.wait_exit(self.one_shot_timeout)
        except WaitTimeout:
            raise ComposeFailure(
                name,
                f"one-shot did not exit within {self.one_shot_timeout:g} s",
                process.describe(),
            ) from None
        if code != 0:
            raise ComposeFailure(name, f"one-shot exited with status {code}", process.describe())
        self.completed.add(name)

    def _wait_healthy(self, name: str) -> None:
        if name in self.healthy:
            return
        c = self.containers[name]
        if c.healthcheck is None:
            raise ComposeFailure(
                name, "has no healthcheck, yet something waits for it to be healthy"
            )
        outcome: dict[str, str] = {}
        try:
            wait_until(
                lambda: self._healthcheck(c, outcome),
                self.healthy_timeout,
                f"{name} healthy",
                check=self.assert_running,
            )
        except WaitTimeout:
            raise ComposeFailure(
                name,
                f"healthcheck {c.healthcheck} never passed within {self.healthy_timeout:g} s "
                f"(last: {outcome.get('last', '?')})",
                self.running[name].describe(),
            ) from None
        self.healthy.add(name)

    def _healthcheck(self, c: Container, outcome: dict[str, str]) -> bool:
        try:
            result = subprocess.run(
                c.healthcheck,
                env=c.env,
                cwd=c.cwd,
                capture_output=True,
                text=True,
                timeout=c.healthcheck_timeout,
            )
        except subprocess.TimeoutExpired:
            outcome["last"] = f"timed out after {c.healthcheck_timeout:g} s"
            return False
        outcome["last"] = f"exit {result.returncode}: {(result.stdout + result.stderr).strip()}"
        return result.returncode == 0

    def _wait_ready(self, name: str) -> None:
        """Not a compose condition, but what the test needs: the processor is connected."""
        c = self.containers[name]
        url = f"http://{c.metrics_addr}/readyz"
        try:
            wait_until(
                lambda: http_status(url) == 200,
                self.ready_timeout,
                f"{name} ready",
                check=self.assert_running,
            )
        except WaitTimeout:
            raise ComposeFailure(
                name,
                f"{url} did not answer 200 within {self.ready_timeout:g} s",
                self.running[name].describe(),
            ) from None

    def assert_running(self) -> None:
        """Long-running services must not exit (compose would restart them in a loop)."""
        for name, process in self.running.items():
            if not self.containers[name].one_shot and process.returncode is not None:
                raise ComposeFailure(
                    name, f"exited with status {process.returncode}", process.describe()
                )
