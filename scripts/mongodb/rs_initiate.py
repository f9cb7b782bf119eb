"""Make a freshly started mongod a single-node replica set primary, or confirm it already is.

Usage: rs_initiate.py PORT TIMEOUT_SECONDS

Runs replSetInitiate once (code 23, AlreadyInitialized, is success) over a direct connection,
then waits until `hello` reports a writable primary. Exit 0 when primary, 1 with a reason.
"""

import sys
import time

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

ALREADY_INITIALIZED = 23


def main() -> int:
    port, timeout = int(sys.argv[1]), float(sys.argv[2])
    deadline = time.monotonic() + timeout
    client = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=2000
    )
    config = {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]}
    last_error = "no attempt made"
    initiated = False
    while time.monotonic() < deadline:
        try:
            if not initiated:
                try:
                    client.admin.command("replSetInitiate", config)
                except OperationFailure as err:
                    if err.code != ALREADY_INITIALIZED:
                        raise
                initiated = True
            if client.admin.command("hello").get("isWritablePrimary"):
                return 0
            last_error = "replica set initiated, not yet primary"
        except PyMongoError as err:
            last_error = str(err)
        time.sleep(0.2)
    print(f"mongod on 127.0.0.1:{port} is not primary after {timeout} s: {last_error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
