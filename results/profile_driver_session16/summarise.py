"""Summarise a py-spy raw profile: the share of the driver's samples under each frame (inclusive)."""

import collections
import sys

samples = collections.Counter()
total = 0
for line in open(sys.argv[1]).read().splitlines():
    stack, count = line.rsplit(" ", 1)
    total += int(count)
    for frame in {f.split(" (")[0] for f in stack.split(";")}:
        samples[frame] += int(count)
print(f"{total} samples")
for frame, count in samples.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 25):
    print(f"{count:6d} {count / total:6.1%} {frame[:110]}")
