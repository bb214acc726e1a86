import io, time, numpy as np, glob
from fedray.data import case_store
files = glob.glob("/tmp/h13/work/data/cases/*/*.npy")
def numpy_layout(f):
    v = np.lib.format.read_magic(f)
    shape, fo, dt = np.lib.format.read_array_header_1_0(f) if v == (1, 0) else np.lib.format.read_array_header_2_0(f)
    return shape, fo, dt, f.tell()
n = 0
for path in files:
    with open(path, "rb") as f:
        a = case_store._plain_header(f); f.seek(0); b = numpy_layout(f)
    assert a == b, (path, a, b); n += 1
# synthetic: shapes and dtypes np.save writes
import tempfile, os
d = tempfile.mkdtemp()
cases = [np.zeros(()), np.zeros((0,)), np.zeros((7,), np.uint8), np.zeros((3, 4), np.int16), np.asfortranarray(np.zeros((3, 4, 5), np.float32)),
         np.zeros((2, 3), np.int64), np.zeros((1,), np.float64), np.zeros((2,), ">f4"), np.zeros((2,), np.bool_), np.zeros((2,), np.complex64),
         np.zeros((2,), [("a", "<f4")]), np.zeros((10**6, 3), np.int32)]
for i, arr in enumerate(cases):
    p = os.path.join(d, f"{i}.npy"); np.save(p, arr)
    with open(p, "rb") as f:
        a = case_store._plain_header(f); f.seek(0); b = numpy_layout(f)
    print(arr.dtype, arr.shape, "fast" if a is not None else "numpy's parser", "ok" if a is None or a == b else ("MISMATCH", a, b))
    m = case_store.map_array(p); assert m.shape == arr.shape and m.dtype == arr.dtype and np.array_equal(m, arr)
print(n, "store files: same layout as numpy's parser")
with open(files[0], "rb") as f:
    s = time.process_time()
    for _ in range(2000): f.seek(0); case_store._plain_header(f)
    t1 = (time.process_time() - s) / 2000 * 1e6
    s = time.process_time()
    for _ in range(2000): f.seek(0); numpy_layout(f)
    t2 = (time.process_time() - s) / 2000 * 1e6
print(f"header parse: fast {t1:.1f} us, numpy {t2:.1f} us")
