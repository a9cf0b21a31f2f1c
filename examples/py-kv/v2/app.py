"""py-kv, version 2: adds `incr` and a new snapshot layout; restores version 1's (kv.py)."""

import kv


class StateMachine(kv.Map):
    VERSION = 2
