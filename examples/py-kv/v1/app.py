"""py-kv, version 1: guest-kv's map in Python (kv.py)."""

import kv


class StateMachine(kv.Map):
    VERSION = 1
