"""NVLink multicast (NVLS, symmetric-memory multicast) stays off in every process the harness
starts: on the lent multi-GPU machines it can take the host's GPUs out of service (issue 18).
Torch-free, so the executor's worker can apply it before anything imports torch or NCCL."""
from __future__ import annotations

import os
from typing import MutableMapping

NO_MULTICAST_ENV = {
    "NCCL_NVLS_ENABLE": "0",                  # NCCL's NVLink SHARP / multicast collectives
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",  # torch symmetric memory's multicast objects
    "NVSHMEM_DISABLE_NVLS": "1",              # NVSHMEM (used by torch symmetric memory) NVLS
}


def disable_multicast(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set the variables in `env` (default: this process's os.environ), overriding any value: a user's
    NCCL_NVLS_ENABLE=1 would be exactly the setting that must not reach these machines."""
    env = os.environ if env is None else env
    env.update(NO_MULTICAST_ENV)
    return env
