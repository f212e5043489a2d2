"""Runs one Supervisor for the ProcessSpec JSON in argv[1]; prints `HEALTHY <pid>` once healthy,
then supervises until killed (the adoption tests SIGKILL this process)."""

import asyncio
import sys
from pathlib import Path

from corral.proc import ProcessSpec, State, Supervisor


async def main(spec: ProcessSpec) -> None:
    sup = Supervisor(spec)
    await sup.start()
    await sup.wait_for(State.HEALTHY, timeout=60)
    print(f"HEALTHY {sup.pid}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main(ProcessSpec.model_validate_json(Path(sys.argv[1]).read_text())))
