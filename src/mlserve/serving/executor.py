"""The thread pool model code runs in, off the event loop: every call but those the batcher
measured as fast (under ``inline_predict_max_ms``), which run inline (`PredictTiming`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class InferenceExecutor:
    """A bounded thread pool for model calls (numpy and scikit-learn release the GIL)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer")

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function`` in the pool and await its result."""
        loop = asyncio.get_running_loop()
        if kwargs:
            return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))
        return await loop.run_in_executor(self._pool, function, *args)

    def shutdown(self) -> None:
        """Finish queued calls and stop the threads."""
        self._pool.shutdown(wait=True)
