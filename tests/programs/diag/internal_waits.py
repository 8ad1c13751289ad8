"""Tasks waiting on asyncio's own futures, each for another reason, when the hang timeout ends it.

A sleep, a stream read, a thread (``to_thread``), an executor, a
subprocess, ``asyncio.wait()``: the report says which, in words.
"""

import asyncio
import sys
import time


async def main() -> None:
    connections = []  # kept: a collected writer closes its connection (3.13)
    server = await asyncio.start_server(
        lambda reader, writer: connections.append(writer), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]

    async def sleeper() -> None:
        await asyncio.sleep(3600)

    async def reader() -> None:
        stream, _ = await asyncio.open_connection("127.0.0.1", port)
        await stream.readline()  # the server never writes

    async def threader() -> None:
        await asyncio.to_thread(time.sleep, 3)

    async def executor() -> None:
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 3)

    async def subprocess() -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(3)"
        )
        await child.wait()

    async def waiter() -> None:
        await asyncio.wait([asyncio.create_task(asyncio.sleep(3600), name="nap")])

    await asyncio.gather(
        *(
            asyncio.create_task(job(), name=job.__name__)
            for job in (sleeper, reader, threader, executor, subprocess, waiter)
        )
    )


asyncio.run(main())
