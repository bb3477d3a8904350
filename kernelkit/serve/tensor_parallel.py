"""Tensor-parallel serving: one process per rank. Rank 0 is the engine's own process: it runs the scheduler,
the sampler and the server. Ranks 1..N-1 are worker processes that this module starts (torch.multiprocessing,
spawn). Each holds its share of the model (``kernelkit.layers``) and of the KV cache (its KV heads), and runs
every step rank 0 runs. The layers' all-reduces keep the ranks in step, and every rank ends a step with the
same hidden states and logits.

Rank 0 tells the workers what to run by broadcasting each call over a gloo process group: the step's host
inputs, or the rows whose logits to compute. That is mini-sglang's way. nano-vllm passes pickled calls
through shared memory and events instead. A broadcast is torch.distributed's own mechanism and is the same on
CPU and GPU, and a peer that is gone breaks it with an error instead of leaving the others waiting on an
event.

Lifetime: ``close`` broadcasts an exit and joins the workers. A worker whose parent dies exits within a second
(it watches its parent pid). If a worker dies while rank 0 lives, rank 0's watchdog logs which rank died and
with what exit code, then ends the process with status 70 (EX_SOFTWARE). A collective that waits for a dead
rank never returns on NCCL, so ending the process is the only way not to hang.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kernelkit import distributed

log = logging.getLogger("kernelkit.serve")
WORKER_DIED_EXIT = 70


def control_group(device: torch.device):
    """The group rank 0 broadcasts calls on: the default group on CPU (gloo already), a gloo group beside
    NCCL on CUDA (NCCL moves tensors on the GPU, not pickled Python objects)."""
    return dist.group.WORLD if device.type != "cuda" else dist.new_group(backend="gloo")


def agree_num_blocks(num_blocks: int, group) -> int:
    """The KV blocks every rank can hold: the fewest over the ranks (each sizes its own share of the cache)."""
    t = torch.tensor([num_blocks], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
    return int(t.item())


class Workers:
    """Rank 0's side: starts ranks 1..tp_size-1, joins the process group as rank 0, broadcasts calls.

    Args:
        build: ``build(rank, group, device)`` run in each worker after it joined the process group (``group``:
            the control group); returns the worker's ``ModelRunner``. It must be picklable (a module-level
            function or a partial of one: ``rank.build_worker``).
        tp_size: the number of ranks, rank 0 included.
        device: where the ranks run (gloo on CPU, NCCL on CUDA; on CUDA rank r uses cuda:r).
    Raises:
        RuntimeError: a worker that failed to start or to join (torch.distributed's error).
    """

    def __init__(self, build, tp_size: int, device: torch.device):
        # a rendezvous file in a fresh private folder: no port to pick that another process could take first
        self._rendezvous = tempfile.mkdtemp(prefix="kernelkit-tp-")
        init_method = f"file://{self._rendezvous}/store"
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_worker_main, args=(build, rank, tp_size, init_method, device),
                                  name=f"kernelkit-tp-rank-{rank}", daemon=True) for rank in range(1, tp_size)]
        for rank, p in enumerate(self.procs, start=1):
            p.start()
            log.info("tensor-parallel rank %d of %d started (pid %d)", rank, tp_size, p.pid)
        distributed.init_tensor_parallel(0, tp_size, init_method, device)
        self.group = control_group(device)
        self._closing = threading.Event()
        threading.Thread(target=self._watch, name="kernelkit-tp-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while not self._closing.wait(0.5):
            for rank, p in enumerate(self.procs, start=1):
                if not p.is_alive() and not self._closing.is_set():
                    log.error("tensor-parallel rank %d died (exit code %s); stopping", rank, p.exitcode)
                    shutil.rmtree(self._rendezvous, ignore_errors=True)
                    os._exit(WORKER_DIED_EXIT)

    def broadcast(self, call: tuple) -> None:
        """Send ``call`` (a tuple: name, then arguments) to every worker. At one rank there is none to tell, and
        the broadcast is skipped: on an H100 host it cost 0.5 ms of a 6.8 ms decode step."""
        if self.procs:
            dist.broadcast_object_list([call], src=0, group=self.group)

    def close(self) -> None:
        """Stop the workers and leave the process group."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self.broadcast(("exit",))
        finally:
            for p in self.procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
            dist.destroy_process_group()
            shutil.rmtree(self._rendezvous, ignore_errors=True)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1)


def _worker_main(build, rank: int, tp_size: int, init_method: str, device: torch.device) -> None:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    distributed.init_tensor_parallel(rank, tp_size, init_method, device)
    group = control_group(device)
    runner = build(rank, group, device)
    while True:
        box = [None]
        dist.broadcast_object_list(box, src=0, group=group)
        name, *args = box[0]
        if name == "exit":
            break
        getattr(runner, name)(*args)
    dist.destroy_process_group()
