"""A discrete-event model of one round's dispatch on 2 actors (PIPELINE 2, calls capped at 10): the
round's end over n/2 task times, for the per-call sizing ("current", session 10), the prefetch call
at half size ("pfhalf") and one size per dispatch pass ("factoring", session 11). Task times 1 +- 10 %,
the actors' speeds differ by |N(0, 0.15)|, each call costs 0.03 of a task on its actor; 4,000 rounds.

    python results/profile_timeline_session11/schedule_sim.py
"""
import math, random, statistics as st, heapq
def simulate(n, P, mode, speeds, noise, call_cost, rng):
    queue=n; busy=[0]*P; ends=[0.0]*P; calls=0; events=[]
    def size(rem, b):
        base = math.ceil(rem/(2*P))
        if mode=="pfhalf" and b>=1: base = math.ceil(rem/(4*P))
        return max(1, min(10, base))
    def give(g, k, now):
        nonlocal queue, calls
        k=min(k,queue); queue-=k; calls+=1
        start=max(now, ends[g]); ends[g]=start+sum(rng.gauss(1,noise)*speeds[g] for _ in range(k))+call_cost
        busy[g]+=1; heapq.heappush(events,(ends[g],g))
    def dispatch(now):
        for depth in (1,2):
            if mode=="factoring":
                k = max(1, min(10, math.ceil(queue/(2*P)))) if queue else 0
                for g in range(P):
                    if busy[g]<depth and queue: give(g, k, now)
            else:
                for g in range(P):
                    while busy[g]<depth and queue: give(g, size(queue, busy[g]), now)
    dispatch(0.0)
    while events:
        t,g=heapq.heappop(events); busy[g]-=1; dispatch(t)
    return max(ends), calls
for n in (10, 20, 100):
    for mode in ("current","pfhalf","factoring"):
        res=[]; cs=[]; rng=random.Random(3)
        for trial in range(4000):
            d=abs(rng.gauss(0,0.15)); sp=[1.0,1.0+d]; rng.shuffle(sp)
            r,c=simulate(n,2,mode,sp,0.1,0.03,rng); res.append(r/(n/2)); cs.append(c)
        print(n, mode, "median %.3f mean %.3f calls %.1f" % (st.median(res), st.mean(res), st.mean(cs)))
