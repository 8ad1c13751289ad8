"""A program that starts Python workers three ways; one trace must cover them all."""

import asyncio
import multiprocessing
import subprocess
import sys


async def contend(tag: str) -> str:
    lock = asyncio.Lock()

    async def use() -> None:
        async with lock:
            await asyncio.sleep(0.01)

    await asyncio.gather(
        asyncio.create_task(use(), name=f"{tag}-a"),
        asyncio.create_task(use(), name=f"{tag}-b"),
    )
    return tag


def worker(tag: str) -> str:
    return asyncio.run(contend(tag))


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    print(worker("subprocess"))
elif __name__ == "__main__":
    print(worker("parent"))
    out = subprocess.run(
        [sys.executable, __file__, "--child"], capture_output=True, text=True, check=True
    )
    print(out.stdout.strip())
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            print(pool.apply(worker, (method,)))
