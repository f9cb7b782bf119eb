// The sink's own MongoDB user, created once: at the first start of the mongodb volume, the
// mongo image's entrypoint creates the root user (MONGO_INITDB_ROOT_*) in a temporary mongod
// (standalone, bound to 127.0.0.1, no replica set, no access control yet), then runs every
// /docker-entrypoint-initdb.d/*.js with mongosh against it, then restarts mongod with the
// replica set and the keyfile (docker-compose.yml). A volume that already holds data skips all
// of this: `docker compose down -v` starts over.
//
// What the sink does to MongoDB (crates/sink/src/writer.rs): at start-up it creates the indexes
// its queries need (createIndexes, which creates the collections), then writes with unordered
// insert_many; duplicates are recognised by their error code, never by reading. So the role
// grants exactly that, on the topology's database only: no find, update, remove, drop, no other
// database, no user or cluster administration. The driver's hello/ping need no privilege.
//
// The credentials come from the environment (compose's MONGO_SINK_* → MONGO_INITDB_SINK_*, which
// the entrypoint unsets before the real mongod starts), never from argv.
//
// tests/compat/mongodb.py reads SINK_ROLE and SINK_ACTIONS from this file (keep each a JSON
// literal on one line) and grants the same in its own mongod, the way this script does.
const SINK_ROLE = "tickstreamSink";
const SINK_ACTIONS = ["insert", "createIndex"];

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is empty: set the MONGO_SINK_* values in .env (see .env.example)`);
  }
  return value;
}

function run(admin, command) {
  const result = admin.runCommand(command);
  if (result.ok !== 1) {
    throw new Error(`${Object.keys(command)[0]} failed: ${result.errmsg} (code ${result.code})`);
  }
}

const database = required("MONGO_INITDB_SINK_DATABASE");
const user = required("MONGO_INITDB_SINK_USERNAME");
const admin = db.getSiblingDB("admin");
run(admin, {
  createRole: SINK_ROLE,
  privileges: [{ resource: { db: database, collection: "" }, actions: SINK_ACTIONS }],
  roles: [],
});
run(admin, {
  createUser: user,
  pwd: required("MONGO_INITDB_SINK_PASSWORD"),
  roles: [{ role: SINK_ROLE, db: "admin" }],
});
print(`created MongoDB user ${user}: role ${SINK_ROLE} (${SINK_ACTIONS.join(", ")} on ${database})`);
