// The mongodb service's healthcheck (docker-compose.yml): `mongosh --nodb --quiet <this file>`.
// Healthy = the writable primary of rs0. It also initiates the replica set, once.
//
// `hello` needs no authentication, so a running replica set is checked without credentials.
// Only the one-time replSetInitiate needs the root user: its password is read here from the
// container's environment, never passed in argv (where `ps` and `docker top` would show it).
const admin = new Mongo(
  "mongodb://127.0.0.1:27017/?directConnection=true&serverSelectionTimeoutMS=3000",
).getDB("admin");
const hello = admin.runCommand({ hello: 1 });
if (hello.isWritablePrimary) {
  quit(0);
}
// A member started with --replSet reports a setName only once a configuration exists.
if (hello.setName === undefined) {
  admin.auth(process.env.MONGO_INITDB_ROOT_USERNAME, process.env.MONGO_INITDB_ROOT_PASSWORD);
  const result = admin.runCommand({
    replSetInitiate: { _id: "rs0", members: [{ _id: 0, host: "mongodb:27017" }] },
  });
  const ALREADY_INITIALIZED = 23;
  if (result.ok !== 1 && result.code !== ALREADY_INITIALIZED) {
    print(`replSetInitiate failed: ${result.errmsg} (code ${result.code})`);
  }
}
quit(1);
