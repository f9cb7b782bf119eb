"""docker-compose.yml's mongodb service without Docker: a mongod of the test's own, with access
control on, first started the way the mongo image's entrypoint does it.

The image, at the first start of an empty volume (docker-library/mongo's docker-entrypoint.sh):
starts a temporary mongod without --replSet, --keyFile or --auth, bound to 127.0.0.1; creates
the root user from MONGO_INITDB_ROOT_*; runs /docker-entrypoint-initdb.d/*.js with mongosh
(ours: deploy/mongodb/initdb/10-sink-user.js); shuts it down and execs the service's command
(here `--replSet rs0 --keyFile …`, and a keyfile turns access control on). The healthcheck
(deploy/mongodb/healthcheck.js) then initiates the replica set as root.

Here the same steps run against a real mongod, with pymongo in place of mongosh: the root user,
then the init script's grant — its role name and action list read from the script itself
(SinkGrant), its environment from the mongodb service's interpolated `environment` — then the
restart with the keyfile, then the healthcheck's initiate. What stays unverified without Docker:
that mongosh runs the two .js files as written (their JavaScript glue), and the image's
entrypoint itself.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pymongo
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError

from support import free_port, wait_until

INIT_SCRIPT = Path("deploy/mongodb/initdb/10-sink-user.js")
REPLICA_SET = "rs0"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SinkGrant:
    """What deploy/mongodb/initdb/10-sink-user.js creates: a role with `actions` on one
    database, and a user in admin holding only that role."""

    role: str
    actions: list[str]
    environment: list[str]  # the variables it reads, in the order it reads them

    @classmethod
    def from_script(cls, path: Path) -> SinkGrant:
        text = path.read_text()

        def literal(name: str) -> object:
            found = re.search(rf"^const {name} = (.+);$", text, re.M)
            assert found, f"{path}: no one-line `const {name} = …;` (mongodb.py reads it)"
            return json.loads(found[1])

        role, actions = literal("SINK_ROLE"), literal("SINK_ACTIONS")
        assert isinstance(role, str) and isinstance(actions, list), f"{path}: unexpected literals"
        return cls(role, actions, re.findall(r'required\("(\w+)"\)', text))

    def create(self, admin: Database, environment: Mapping[str, str]) -> None:
        """The script's two commands, as it sends them, from the variables it reads."""
        missing = [name for name in self.environment if not environment.get(name)]
        assert not missing, f"{INIT_SCRIPT} reads {missing}, which the mongodb service leaves empty"
        database = environment["MONGO_INITDB_SINK_DATABASE"]
        admin.command(
            {
                "createRole": self.role,
                "privileges": [
                    {"resource": {"db": database, "collection": ""}, "actions": self.actions}
                ],
                "roles": [],
            }
        )
        admin.command(
            {
                "createUser": environment["MONGO_INITDB_SINK_USERNAME"],
                "pwd": environment["MONGO_INITDB_SINK_PASSWORD"],
                "roles": [{"role": self.role, "db": "admin"}],
            }
        )


class Mongod:
    """A mongod on a free loopback port with its own data dir, keyfile and log."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.data = directory / "data"
        self.data.mkdir(parents=True)
        self.log = directory / "mongod.log"
        # As the mongodb-keyfile service makes it: 756 random bytes, base64, mode 0400.
        self.keyfile = directory / "keyfile"
        self.keyfile.write_bytes(base64.b64encode(secrets.token_bytes(756)))
        self.keyfile.chmod(0o400)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **options: object) -> pymongo.MongoClient:
        return pymongo.MongoClient(
            f"mongodb://{self.address}/", directConnection=True, serverSelectionTimeoutMS=2000,
            **options,
        )  # fmt: skip

    def first_start(self, environment: Mapping[str, str], grant: SinkGrant) -> None:
        """The image's first start with the mongodb service's `environment`; returns once
        the restarted mongod is the writable primary of rs0."""
        self._start()  # the entrypoint's temporary mongod: no replica set, no access control
        with self.client() as bootstrap:
            wait_until(lambda: self._answers(bootstrap), START_TIMEOUT, "the temporary mongod")
            bootstrap.admin.command(
                "createUser",
                environment["MONGO_INITDB_ROOT_USERNAME"],
                pwd=environment["MONGO_INITDB_ROOT_PASSWORD"],
                roles=[{"role": "root", "db": "admin"}],
            )
            grant.create(bootstrap.admin, environment)
        self.stop()
        # The service's command: the replica set and the keyfile (access control on).
        self._start("--replSet", REPLICA_SET, "--keyFile", str(self.keyfile))
        self._initiate(environment)

    def _initiate(self, environment: Mapping[str, str]) -> None:
        """What deploy/mongodb/healthcheck.js does: hello without credentials; the one-time
        replSetInitiate as root; healthy once a writable primary."""
        root = self.client(
            username=environment["MONGO_INITDB_ROOT_USERNAME"],
            password=environment["MONGO_INITDB_ROOT_PASSWORD"],
            authSource="admin",
        )
        with self.client() as anonymous, root:
            wait_until(lambda: self._answers(anonymous), START_TIMEOUT, "mongod with a keyfile")
            if "setName" not in anonymous.admin.command("hello"):
                config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": self.address}]}
                root.admin.command("replSetInitiate", config)
            wait_until(
                lambda: anonymous.admin.command("hello").get("isWritablePrimary"),
                START_TIMEOUT,
                f"mongod at {self.address} to become the writable primary of {REPLICA_SET}",
            )

    def _answers(self, client: pymongo.MongoClient) -> bool:
        self._assert_running()
        try:
            client.admin.command("ping")
            return True
        except ConnectionFailure:
            return False

    def _start(self, *args: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "--dbpath", str(self.data), "--bind_ip", "127.0.0.1",
                 "--port", str(self.port), "--wiredTigerCacheSizeGB", "0.25",
                 "--setParameter", "diagnosticDataCollectionEnabled=false", *args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _assert_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"mongod exited with status {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM: mongod shuts down cleanly (the entrypoint's `mongod --shutdown`)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def is_unauthorized(action: Callable[[], object]) -> bool:
    """Whether `action` fails with MongoDB's Unauthorized (code 13)."""
    try:
        action()
    except PyMongoError as e:
        return getattr(e, "code", None) == 13
    return False
