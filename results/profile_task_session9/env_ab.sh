#!/bin/bash
# back-to-back process pairs, alternating order: bare update CPU (median of 15 after 3 warm-ups) with default malloc and with tuned glibc tunables
T="glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=67108864"
for i in $(seq 1 ${1:-8}); do
  if [ $((i % 2)) = 1 ]; then order="default tuned"; else order="tuned default"; fi
  for m in $order; do
    if [ $m = tuned ]; then GLIBC_TUNABLES=$T nice -n 10 python /tmp/h13/malloc_ab.py tunables 15; else nice -n 10 python /tmp/h13/malloc_ab.py default 15; fi
  done
done
