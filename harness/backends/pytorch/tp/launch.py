"""The rank launcher: N spawned processes joined in one torch.distributed group (torchrun's job,
done by the harness so that a cell owns its ranks' lifetime): rendezvous over TCP on a free
loopback port, NCCL on GPU, gloo on CPU. Each rank runs `target(rank, world, conn, *args)`, with a
pipe back to the launching process; the launcher sends and receives on those pipes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from typing import Any, Callable

from harness.backends.pytorch.tp.env import NO_MULTICAST_ENV, disable_multicast

# Rank start-up: spawn + importing torch and transformers (2-15 s on a loaded 2-core machine) and
# loading a model; a 70B load from disk takes minutes.
DEFAULT_START_TIMEOUT_S = 1800.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks; small race accepted, as torchrun)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(rank: int, world: int, port: int, backend: str, env: dict, conn, target, args) -> None:
    os.environ.update(env)          # before torch.distributed creates any communicator
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        target(rank, world, conn, *args)
    finally:
        conn.close()
        dist.destroy_process_group()


class RankError(RuntimeError):
    """A rank reported an error or died."""


class RankGroup:
    """N rank processes. `send(i, msg)` / `recv(i)` talk to rank i; `close()` joins them."""

    def __init__(self, world: int, target: Callable, args: tuple = (), backend: str = "gloo",
                 env: dict[str, str] | None = None):
        if world < 1:
            raise ValueError(f"world size must be at least 1, got {world}")
        ctx = mp.get_context("spawn")
        disable_multicast()         # this process too; spawned children inherit os.environ
        child_env = {**(env or {}), **NO_MULTICAST_ENV}
        port = free_port()
        self.world, self.backend = world, backend
        self.conns, self.procs = [], []
        for r in range(world):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_rank_entry, args=(r, world, port, backend, child_env, child, target, args),
                            name=f"harness-rank{r}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def send_all(self, msg: Any) -> None:
        for c in self.conns:
            c.send(msg)

    def recv(self, rank: int, timeout_s: float | None = None) -> Any:
        c, p = self.conns[rank], self.procs[rank]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not c.poll(1.0):
            if not p.is_alive():
                raise RankError(f"rank {rank} exited with code {p.exitcode} before replying")
            if deadline is not None and time.monotonic() > deadline:
                raise RankError(f"rank {rank} did not reply within {timeout_s:.0f} s")
        try:
            msg = c.recv()
        except EOFError:
            raise RankError(f"rank {rank} closed its pipe (exit code {p.exitcode})") from None
        if isinstance(msg, tuple) and msg and msg[0] == "error":
            raise RankError(f"rank {rank}: {msg[1]}")
        return msg

    def recv_all(self, timeout_s: float | None = None) -> list:
        """Every rank's reply, rank 0 first; the first error raised after all were collected or died."""
        out, err = [], None
        for r in range(self.world):
            try:
                out.append(self.recv(r, timeout_s))
            except RankError as e:
                err = err or e
                out.append(None)
        if err is not None:
            raise err
        return out

    def close(self, timeout_s: float = 30.0) -> None:
        for c in self.conns:
            try:
                c.send(("close",))
            except (OSError, ValueError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout_s)
            if p.is_alive():
                p.kill()            # this group's own process, by its handle
                p.join(5)
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []
