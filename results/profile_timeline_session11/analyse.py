"""Per round, from timeline.py's JSON: the round's span on the actors, how much earlier the first
actor's flush ended than the last's (end-of-round imbalance), the gap from the last flush to the next
round's first call (the driver's critical path between rounds), and the actors' idle gaps inside a round.

    python results/profile_timeline_session11/analyse.py OUT.json
"""
import json
import statistics as st
import sys

d = json.load(open(sys.argv[1]))
calls = [c for c in d["calls"] if c["name"] in ("run_batch", "flush")]
workers = sorted({c["worker"] for c in calls})
flushes = {w: sorted((c for c in calls if c["worker"] == w and c["name"] == "flush"), key=lambda c: c["end_ms"]) for w in workers}
rounds = min(len(f) for f in flushes.values())
rows = []
for r in range(rounds):
    ends = [flushes[w][r]["end_ms"] for w in workers]
    starts = []
    in_round_gaps = 0.0
    busy = 0.0
    for w in workers:
        lo = flushes[w][r - 1]["end_ms"] if r else -1e18
        mine = sorted((c for c in calls if c["worker"] == w and lo < c["start_ms"] <= flushes[w][r]["start_ms"]),
                      key=lambda c: c["start_ms"])
        starts.append(mine[0]["start_ms"])
        for a, b in zip(mine, mine[1:]):
            in_round_gaps += max(0.0, b["start_ms"] - a["end_ms"])
        busy += sum(c["end_ms"] - c["start_ms"] for c in mine if c["name"] == "run_batch")
    row = {"round": r + 1, "span_ms": max(ends) - min(starts), "imbalance_ms": max(ends) - min(ends),
           "in_round_gaps_ms": in_round_gaps, "busy_ms_per_actor": busy / len(workers),
           "calls": sum(1 for c in calls if c["name"] == "run_batch" and min(starts) <= c["start_ms"] <= max(ends))}
    if r + 1 < rounds:
        nxt = []
        for w in workers:
            following = [c for c in calls if c["worker"] == w and c["start_ms"] > flushes[w][r]["end_ms"]]
            nxt.append(min(c["start_ms"] for c in following))
        row["between_rounds_ms"] = min(nxt) - max(ends)
    rows.append(row)
print("round span imbalance in_round_gaps busy/actor calls between")
for row in rows:
    print(row["round"], *(f"{row.get(k, float('nan')):.1f}" for k in ("span_ms", "imbalance_ms", "in_round_gaps_ms", "busy_ms_per_actor")),
          row["calls"], f"{row.get('between_rounds_ms', float('nan')):.1f}")
steady = rows[1:]
for key in ("span_ms", "imbalance_ms", "in_round_gaps_ms", "busy_ms_per_actor", "between_rounds_ms"):
    vals = [row[key] for row in steady if key in row]
    print(f"median {key}: {st.median(vals):.1f}")
