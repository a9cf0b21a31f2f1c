"""guest-kv's key-value map, written in Python: the same commands, queries, answers and change
announcements (see guest-kv/src/schema.rs), so the HTTP and gRPC key-value API, kvclient and the
chaos suite work on it unchanged. Built into a component by componentize-py (scripts/polyglot.sh).

Determinism: the state is a dict (insertion-ordered), snapshots sort their keys, and nothing
reads the node: the clock and random bytes a Python program could see are the log entry's.

VERSION 2 (app_v2.py) adds `incr` and writes snapshots in a new layout; its restore migrates
version 1's.
"""

import json

from componentize_py_types import Err
from wit_world.exports import state_machine as sm
from wit_world.imports import context

MAX_TXN_OPS = 1024
DEFAULT_SCAN_LIMIT = 100
MAX_SCAN_LIMIT = 10_000

# The map, key -> value. Module state: componentize-py makes a fresh StateMachine per call.
DATA = {}


def refuse(kind, message):
    raise Err(kind(message))


def encode(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data, what):
    try:
        value = json.loads(data)
    except ValueError as e:
        refuse(sm.Error_InvalidInput, f"{what} is not JSON: {e}")
    if not isinstance(value, dict):
        refuse(sm.Error_InvalidInput, f"{what} must be a JSON object")
    return value


def text(op, field, optional=False):
    value = op.get(field)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        refuse(sm.Error_InvalidInput, f"`{field}` must be a string")
    if field == "key" and not value:
        refuse(sm.Error_InvalidInput, "keys must not be empty")
    return value


def announce(kind, key, prev):
    payload = {"op": kind, "value": DATA.get(key), "prev": prev}
    context.emit(key, encode(payload))


def put(op, kind="put"):
    key, value = text(op, "key"), text(op, "value")
    prev = DATA.get(key)
    DATA[key] = value
    announce(kind, key, prev)
    return {"prev": prev}


def delete(op):
    key = text(op, "key")
    prev = DATA.pop(key, None)
    if prev is not None:
        announce("delete", key, prev)
    return {"deleted": prev is not None, "prev": prev}


def append(op):
    key, tail = text(op, "key"), text(op, "value")
    prev = DATA.get(key)
    DATA[key] = (prev or "") + tail
    announce("append", key, prev)
    return {"len": len(DATA[key].encode())}


def cas(op):
    key = text(op, "key")
    expected, value = text(op, "expected", True), text(op, "value", True)
    current = DATA.get(key)
    if current != expected:
        return {"swapped": False, "current": current}
    if value is None:
        DATA.pop(key, None)
    else:
        DATA[key] = value
    if current is not None or value is not None:
        announce("cas", key, current)
    return {"swapped": True, "current": value}


def incr(op):
    key, by = text(op, "key"), op.get("by", 1)
    if not isinstance(by, int) or isinstance(by, bool):
        refuse(sm.Error_InvalidInput, "`by` must be an integer")
    prev = DATA.get(key)
    try:
        value = int(prev or "0") + by
    except ValueError:
        refuse(sm.Error_Rejected, f"the value of {key!r} is not an integer")
    DATA[key] = str(value)
    announce("incr", key, prev)
    return {"value": value}


TXN_OPS = {
    "get": lambda op: {"value": DATA.get(text(op, "key"))},
    "put": put,
    "delete": delete,
    "append": append,
}


def txn(op):
    ops = op.get("ops")
    if not isinstance(ops, list) or len(ops) > MAX_TXN_OPS:
        refuse(sm.Error_InvalidInput, f"`ops` must be a list of at most {MAX_TXN_OPS}")
    # Every operation is checked before any runs: a bad one rejects the whole transaction.
    for each in ops:
        if not isinstance(each, dict) or each.get("op") not in TXN_OPS:
            refuse(sm.Error_InvalidInput, "each txn op is a get, put, delete or append")
        text(each, "key")
        if each["op"] in ("put", "append"):
            text(each, "value")
    return {"results": [TXN_OPS[each["op"]](each) for each in ops]}


def scan(q):
    prefix, start, end = (text(q, f, True) for f in ("prefix", "start", "end"))
    limit = q.get("limit") or DEFAULT_SCAN_LIMIT
    if not isinstance(limit, int) or limit < 0:
        refuse(sm.Error_InvalidInput, "`limit` must be a non-negative integer")
    limit = min(limit, MAX_SCAN_LIMIT)
    keys = sorted(
        k
        for k in DATA
        if (prefix is None or k.startswith(prefix))
        and (start is None or k >= start)
        and (end is None or k < end)
    )
    items = [{"key": k, "value": DATA[k]} for k in keys[:limit]]
    return {"items": items, "more": len(keys) > limit}


QUERIES = {
    "get": lambda q: {"value": DATA.get(text(q, "key"))},
    "get_many": lambda q: {"values": [DATA.get(k) for k in q.get("keys") or []]},
    "scan": scan,
}


class Map:
    """The state machine; `VERSION` picks the commands and the snapshot layout."""

    VERSION = 1

    def commands(self):
        ops = {"put": put, "delete": delete, "cas": cas, "append": append, "txn": txn}
        if self.VERSION >= 2:
            ops["incr"] = incr
        return ops

    def apply(self, command):
        op = decode(command, "a command")
        run = self.commands().get(op.get("op"))
        if run is None:
            refuse(sm.Error_InvalidInput, f"unknown command {op.get('op')!r}")
        return encode(run(op))

    def query(self, request):
        q = decode(request, "a query")
        run = QUERIES.get(q.get("op"))
        if run is None:
            refuse(sm.Error_InvalidInput, f"unknown query {q.get('op')!r}")
        return encode(run(q))

    def snapshot(self):
        items = sorted(DATA.items())
        if self.VERSION >= 2:
            return encode({"format": 2, "items": items})
        return encode(dict(items))

    def restore(self, state):
        saved = decode(state, "a snapshot") if state else {}
        if "format" in saved:
            if self.VERSION < saved["format"]:
                refuse(sm.Error_Rejected, f"snapshot format {saved['format']} is newer")
            items = saved["items"]
        else:
            # Version 1's layout: the map itself.
            items = saved.items()
        DATA.clear()
        DATA.update((k, v) for k, v in items)
        print(f"restored {len(DATA)} keys into version {self.VERSION}")
