"""No rank of a training run dies in gloo's threads while Python finalizes.

Why: a gloo worker thread drops its last reference to a finished collective just after the main thread has moved on.
When that collective's tensors were Python tensors, dropping them takes the GIL. If the main thread has meanwhile
reached the interpreter's finalization, Python 3.11 ends the worker with ``pthread_exit``, which ends in
``std::terminate`` ("terminate called without an active exception", SIGABRT): the rank dies after its work is
done, or, when it raised an error, the abort hides the error's exit code. Seen with gdb in a core dump:
``ProcessGroupGloo::runLoop`` → ``~AsyncAllreduceWork`` → ``TensorImpl::decref_pyobject`` → ``take_gil`` →
``pthread_exit``. ``destroy_process_group`` stops those threads only when nothing else holds the group (a
``DistributedDataParallel`` model does), so ending the group is not enough: the exit handler also lets go of the
GIL for a moment, so a worker that waits for it finishes while Python is whole. The CLI's training commands go
further and skip the finalization (``mmflow.cli.exit_without_teardown``). Measured in docs/distributed.md
("Process exit").
"""

from __future__ import annotations

import atexit
import time

import torch

WORKER_GRACE_SECONDS = 0.05
"""How long the exit handler leaves the GIL to gloo's worker threads (one of them needs it for microseconds; the
main thread hands the GIL over within Python's 5 ms switch interval)."""

_registered = False


def end_process_group_at_exit() -> None:
    """If this process is in a gloo process group, register (once) an exit handler that destroys the group if it
    still exists, then leaves the GIL to gloo's worker threads for ``WORKER_GRACE_SECONDS``.

    atexit handlers run before the interpreter finalizes, on a normal end (also after ``end_training``, whose
    destroy leaves the threads running while a model still holds the group) and after an uncaught exception alike.
    NCCL groups are left to ``accelerator.end_training()``: an NCCL destroy in an error path may wait for ranks that
    are gone, and that cannot be tested without GPUs. A single process has no group and registers nothing.
    """
    global _registered
    distributed = torch.distributed
    in_gloo_group = distributed.is_available() and distributed.is_initialized() and distributed.get_backend() == "gloo"
    if in_gloo_group and not _registered:
        atexit.register(_end_gloo_group)
        _registered = True


def _end_gloo_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    time.sleep(WORKER_GRACE_SECONDS)  # releases the GIL
