"""moto's server, with DynamoDB's conditional writes made atomic and its batches keyed.

moto answers requests on threads and checks a write's condition apart from making the write,
so two racing writes to one item can both pass a condition that only one of them may: a save
guarded by its version, a rate-limit counter, a lane's state. DynamoDB never lets that happen
to an item, and the service relies on it, so here each write runs whole before the next.
Reads are left concurrent.

DynamoDB refuses a whole `BatchWriteItem` that names one item (its key) twice; moto refuses
only requests that are the same byte for byte, so two writes of one key whose other attributes
differ, or come in another order, pass here and fail there. Here they fail as they do there.

DynamoDB refuses a `Query` whose key condition is `BETWEEN :lo AND :hi` with `:lo` above `:hi`;
moto answers it with nothing. Here it is refused as there.

Usage: python scripts/emulator.py -H 127.0.0.1 -p PORT (the options of moto_server).
"""

import decimal
import functools
import json
import re
import sys
import threading

from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
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

def keyed(batch_write):
    @functools.wraps(batch_write)
    def checked(self):
        for table_name, requests in self.body["RequestItems"].items():
            table = self.dynamodb_backend.get_table(table_name)
            names = [table.hash_key_attr, table.range_key_attr]
            seen = set()
            for request in requests:
                for kind, body in request.items():
                    fields = body["Item"] if kind == "PutRequest" else body["Key"]
                    key = json.dumps([fields.get(n) for n in names if n], sort_keys=True)
                    if key in seen:
                        raise MockValidationException(
                            "Provided list of item keys contains duplicates"
                        )
                    seen.add(key)
        return batch_write(self)

    return checked


DynamoHandler.batch_write_item = keyed(DynamoHandler.batch_write_item)

BETWEEN = re.compile(r"BETWEEN\s+(:\w+)\s+AND\s+(:\w+)", re.IGNORECASE)


def ordered(bound):
    """A key value as DynamoDB orders it: strings by their UTF-8 bytes (the order of their code
    points), numbers as numbers, binary by its bytes."""
    (kind, value), = bound.items()
    return (kind, decimal.Decimal(value) if kind == "N" else value)


def bounded(query):
    @functools.wraps(query)
    def checked(self):
        values = self.body.get("ExpressionAttributeValues", {})
        condition = self.body.get("KeyConditionExpression", "")
        for lo, hi in BETWEEN.findall(condition):
            if lo in values and hi in values and ordered(values[lo]) > ordered(values[hi]):
                raise MockValidationException(
                    "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound "
                    "to be greater than or equal to lower bound"
                )
        return query(self)

    return checked


DynamoHandler.query = bounded(DynamoHandler.query)

if __name__ == "__main__":
    sys.exit(main())
