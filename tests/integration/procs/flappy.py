"""Run N lives a planned time: `flappy.py COUNTER_FILE 0,0,1.2,0`. Run k (counted in
COUNTER_FILE) prints its number, lives plan[k] seconds and exits 1; past the plan it stays up."""

import sys
import time
from pathlib import Path

counter = Path(sys.argv[1])
plan = [float(x) for x in sys.argv[2].split(",")]
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
print(f"run {run}", flush=True)
if run >= len(plan):
    while True:
        time.sleep(60)
time.sleep(plan[run])
sys.exit(1)
