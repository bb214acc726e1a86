import pickle, sys, numpy as np
a, b = (pickle.load(open(p, "rb")) for p in sys.argv[1:3])
assert len(a) == len(b)
for x, y in zip(a, b):
    if x[0] == "report":
        assert x[1] == y[1], (x[1], y[1])
    else:
        assert x[1:3] == y[1:3]
        assert x[3].keys() == y[3].keys() and all(np.array_equal(x[3][k], y[3][k]) for k in x[3]), "partial sums differ"
        assert x[4] == y[4], (x[4], y[4])
print("bit-identical: %d reports, %d partial sums, losses equal" % (sum(e[0] == "report" for e in a), sum(e[0] == "part" for e in a)))
