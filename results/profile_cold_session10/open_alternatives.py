"""Alternatives to the pieces of a first case open, timed alone on each stored case's first touch in this process,
CPU clock (ad hoc, session 10): .npy opened with open() + two reads + mmap against os.open + pread + mmap;
case.json read_text + json.loads against os.read + a regex on its start; is_stored against a bare os.stat.

    PYTHONPATH=/work/h14 nice -n 10 python results/profile_cold_session10/open_alternatives.py
"""
import os, json, re, time, statistics, mmap, glob
folders = sorted(glob.glob("/tmp/h14/work/data/cases/*/"))
clock = time.process_time
A, B, C, D, E, F = [], [], [], [], [], []
VER = re.compile(rb'\{\s*"store_version": (\d+),')
for i, f in enumerate(folders):
    img = f + "image.npy"; lab = f + "label.npy"; js = f + "case.json"
    # io.open + two reads (as map_array) vs os.open + pread, on two different files of the same case (both first touches)
    a, b = (img, lab) if i % 2 else (lab, img)
    s = clock(); fh = open(a, "rb"); st = os.fstat(fh.fileno()); fh.read(10); fh.read(118); m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ); fh.close(); A.append(clock() - s)
    s = clock(); fd = os.open(b, os.O_RDONLY | os.O_CLOEXEC); st = os.fstat(fd); os.pread(fd, 512, 0); m2 = mmap.mmap(fd, 0, access=mmap.ACCESS_READ); os.close(fd); B.append(clock() - s)
    # case.json: read_text + json.loads vs os read + regex; stat of the path (is_stored's) alone
    from pathlib import Path
    s = clock(); json.loads(Path(js).read_text()); C.append(clock() - s)
    s = clock(); fd = os.open(js, os.O_RDONLY | os.O_CLOEXEC); data = os.read(fd, 1 << 16); os.close(fd); VER.match(data); D.append(clock() - s)
    s = clock(); (Path(f) / "case.json").is_file(); E.append(clock() - s)
    s = clock(); os.stat(js); F.append(clock() - s)
med = lambda x: statistics.median(x) * 1e6
print(f"{len(folders)} cases, median us: .npy io.open+2 reads+mmap {med(A):.1f} | os.open+pread+mmap {med(B):.1f} | case.json read_text+json.loads {med(C):.1f} | os.read+regex {med(D):.1f} | is_stored {med(E):.1f} | os.stat {med(F):.1f}")
