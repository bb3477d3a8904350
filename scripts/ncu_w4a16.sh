#!/usr/bin/env bash
# Nsight Compute sections of the W4A16 tensor-core kernel on the GPU machine (through the device tool, .whl
# carried): scripts/ncu_w4a16.sh M,N,K,WARPS,MT,UNROLL,PF ...; the reports go to $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING
export PYTHONPATH=/tmp/site:$PWD KERNELKIT_CACHE_DIR=/tmp/kk-cache
for spec in "$@"; do
  echo "=== $spec"
  ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section MemoryWorkloadAnalysis -k regex:w4a16 -s 2 -c 1 python3 scripts/profile_w4a16.py "$spec" > /tmp/ncu.txt 2>&1
  grep -E "Duration|DRAM Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Waves" /tmp/ncu.txt
  cp /tmp/ncu.txt "${OUT:-/tmp}/ncu_$(echo "$spec" | tr , _).txt"
done
