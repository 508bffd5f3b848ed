"""Micro-batching: requests arriving within a few milliseconds run as one batched ``LocalModel.generate``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..local import LocalModel, RowRequest, RowResult, Sampling
from .schemas import ApiError

log = logging.getLogger(__name__)


@dataclass
class _Job:
    row: RowRequest
    sampling: Sampling
    future: asyncio.Future
    # Streaming requests: (token, is_last) as each is chosen, then None if the batch failed.
    tokens: asyncio.Queue | None = None


class MicroBatcher:
    """Gathers requests for a few milliseconds and runs each compatible group as one batch."""

    def __init__(self, model: LocalModel, max_batch_size: int, wait_ms: float):
        self.model = model
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000
        self.batches_run = 0
        self.rows_run = 0
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, row: RowRequest, sampling: Sampling) -> RowResult:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(row, sampling, future))
        return await future

    async def submit_stream(self, row: RowRequest, sampling: Sampling) -> tuple[asyncio.Queue, asyncio.Future]:
        """Like ``submit``, but each token also arrives on the returned queue while the batch runs."""
        future = asyncio.get_running_loop().create_future()
        tokens: asyncio.Queue = asyncio.Queue()
        await self._queue.put(_Job(row, sampling, future, tokens))
        return tokens, future

    async def stream(self, row: RowRequest, sampling: Sampling):
        """(token, top, result) for each token as the batch chooses it: ``top`` the step's most likely tokens (empty
        unless the row asked for ``top_n_tokens``), ``result`` only with the last one."""
        tokens, future = await self.submit_stream(row, sampling)
        sent = 0
        while (item := await tokens.get()) is not None:
            token, last, top = item
            sent += 1
            yield token, top, (await future if last else None)
            if last:
                return
        # The batch ended without this row's last token on the queue: failed (the future raises), or a model
        # that does not report tokens as it goes; then the rest is replayed from the result.
        result = await future
        for i, token in enumerate(result.tokens[sent:], start=sent + 1):
            top = result.top_tokens[i - 1] if len(result.top_tokens) >= i else []
            yield token, top, (result if i == len(result.tokens) else None)

    async def _loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            groups: dict[Sampling, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.sampling, []).append(job)
            for sampling, group in groups.items():
                await self._run(sampling, group)

    async def _run(self, sampling: Sampling, group: list[_Job]) -> None:
        live = [j for j in group if not j.future.cancelled()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        on_token = None
        if any(j.tokens is not None for j in live):

            def on_token(index: int, token, last: bool, top: list) -> None:  # runs on the generation thread
                queue = live[index].tokens
                if queue is not None:
                    loop.call_soon_threadsafe(queue.put_nowait, (token, last, top))

        try:
            results = await asyncio.to_thread(self.model.generate, [j.row for j in live], sampling, on_token)
        except Exception as exc:  # the model failed mid-generation: TGI's 424
            log.exception("batch of %d failed", len(live))
            for job in live:
                if not job.future.done():
                    job.future.set_exception(ApiError(424, "generation", f"Request failed during generation: {exc}"))
                if job.tokens is not None:
                    job.tokens.put_nowait(None)
            return
        self.batches_run += 1
        self.rows_run += len(live)
        for job, result in zip(live, results):
            if not job.future.done():
                job.future.set_result(result)
            if job.tokens is not None:
                job.tokens.put_nowait(None)  # after every token: the thread's callbacks ran before this resumed
