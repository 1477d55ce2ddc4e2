"""Run in a fresh interpreter (nothing imported yet, as in a gateway just started): the longest
the event loop is held while the usage poller reads every account, against the longest while
it idles. Prints JSON {"idle": s, "poll": s, "polled": n}. Argument: data dir, upstream URL."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from mitmproxy.test import taddons

from cao.addons.gateway import Gateway
from cao.addons.usagepoll import UsagePoller


async def longest_gap(work: asyncio.Future[object] | None, seconds: float) -> float:
    """The longest wait between two 1 ms ticks while `work` runs (or for `seconds`)."""
    gaps = [0.0]
    last = time.perf_counter()
    deadline = last + seconds
    while (work is not None and not work.done()) or time.perf_counter() < deadline:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return max(gaps)


async def main(data_dir: str, upstream: str) -> None:
    gateway = Gateway()
    poller = UsagePoller(gateway)
    with taddons.context(gateway) as tctx:
        tctx.configure(gateway, cao_data_dir=data_dir, cao_upstream=upstream)
        tctx.master.addons.add(poller)
        idle = await longest_gap(None, 0.3)
        poll = asyncio.ensure_future(poller.poll_all())
        busy = await longest_gap(poll, 0.05)
        polled = len(poller.schedule.last)
        await poller.done()
    print(json.dumps({"idle": idle, "poll": busy, "polled": polled}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
