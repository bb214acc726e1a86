#!/bin/bash
# Where the CPU goes during a 100x10 study's rounds (code in $1): py-spy on the driver actor, and every process's CPU over the same 12 s.
tree=$1; out=$2; mkdir -p $out
cd $tree && (RAY_AUTH_MODE=token PYTHONPATH=$tree timeout 600 python -m fedray.cli bench scale --scenarios 100x10 --rounds 80 --cli-runs 0 --bare-repeats 3 --work-dir /tmp/peers16/prof --out $out/scale.json > $out/scale.log 2>&1 &)
for i in $(seq 1 90); do pid=$(pgrep -f "ray::DriverActor.run" | head -1); [ -n "$pid" ] && break; sleep 0.5; done
sleep 8
python - $out/procs.json <<'PY' &
import json, os, sys, time
def snap():
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try:
            stat = open(f"/proc/{p}/stat").read(); cmd = open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:120]
        except OSError: continue
        f = stat.rsplit(")", 1)[1].split()
        out[p] = ((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), cmd or stat.split("(")[1].split(")")[0])
    return out
a = snap(); t = time.time(); time.sleep(12); b = snap(); dt = time.time() - t
rows = sorted(((b[p][0] - a[p][0]) / dt, b[p][1]) for p in b if p in a)
json.dump({"window_s": dt, "cores_busy": [[round(c, 4), n] for c, n in rows[::-1] if c > 0.001]}, open(sys.argv[1], "w"), indent=1)
PY
py-spy record -p $pid -d 12 -r 100 -f raw -o $out/driver.txt --nonblocking > /dev/null 2>&1
wait
sleep 1; cat $out/procs.json | head -30
