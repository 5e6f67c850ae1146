"""moto's server, with DynamoDB's conditional writes made atomic.

moto answers requests on threads and checks a write's condition apart from making the write,
so two racing writes to one item can both pass a condition that only one of them may: a save
guarded by its version, a rate-limit counter, a lane's state. DynamoDB never lets that happen
to an item, and the service relies on it, so here each write runs whole before the next.
Reads are left concurrent.

Usage: python scripts/emulator.py -H 127.0.0.1 -p PORT (the options of moto_server).
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
one_write_at_a_time = threading.RLock()


def atomic(write):
    @functools.wraps(write)
    def locked(*args, **kwargs):
        with one_write_at_a_time:
            return write(*args, **kwargs)

    return locked


for name in WRITES:
    setattr(DynamoDBBackend, name, atomic(getattr(DynamoDBBackend, name)))

if __name__ == "__main__":
    sys.exit(main())
