"""A stand-in peer for tests: its first run in a folder crashes, the next writes three 0.5 s rounds."""

import json
import sys
import time
from pathlib import Path

spec, out = Path(sys.argv[1]), Path(sys.argv[2])
marker = out.parent / "crashed-once"
if not marker.exists():
    marker.touch()
    sys.exit("terminate called without an active exception")
now = time.time()
out.write_text(json.dumps({"version": "0", "round_s": [0.5, 0.5, 0.5], "round_ends": [now + 0.5, now + 1.0, now + 1.5]}))
