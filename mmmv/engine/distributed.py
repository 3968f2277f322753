"""Start and tear down the process group of a multi-process run, on GPUs or CPUs.

- :func:`export_local_rank`: ``LOCAL_RANK`` for mmengine's DDP wrapper, which puts each rank's
  module on ``device_ids=[int(os.environ['LOCAL_RANK'])]``.
- :func:`init_cpu_distributed`: the gloo process group of a ``torchrun`` launch without CUDA
  (mmengine's own start calls ``torch.cuda.set_device``).
- :func:`release_distributed`: destroy the process group when the run ends.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.config import Config

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# Open MPI's mpirun sets it; mmengine's MPI start reads it for torch.cuda.set_device only
MPI_LOCAL_RANK = 'OMPI_COMM_WORLD_LOCAL_RANK'


def export_local_rank(launcher: str, local_rank=None, environ=os.environ) -> str:
    """Set ``environ['LOCAL_RANK']`` (this process's GPU on its node) and return it.

    By priority: ``local_rank`` (the ``--local-rank`` flag, which only the legacy
    ``torch.distributed.launch`` passes), then for ``launcher='mpi'`` Open MPI's
    ``OMPI_COMM_WORLD_LOCAL_RANK``, then a ``LOCAL_RANK`` already set (torchrun; slurm runs get
    it from mmengine's start), else '0'.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if local_rank is not None:
        value = str(local_rank)
    elif launcher == 'mpi':
        if MPI_LOCAL_RANK not in environ:
            raise KeyError(f"launcher='mpi' needs {MPI_LOCAL_RANK} in the environment (Open "
                           "MPI's mpirun sets it); other launchers: --launcher pytorch / slurm")
        value = environ[MPI_LOCAL_RANK]
    else:
        value = environ.get('LOCAL_RANK', '0')
    environ['LOCAL_RANK'] = value
    return value


def init_cpu_distributed(cfg: Config):
    """Start the gloo process group of a ``torchrun`` launch on a machine without CUDA."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise ValueError(f"launcher={launcher!r} needs CUDA; on a CPU use launcher='pytorch' "
                         '(torchrun, tools/dist_train.sh)')
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    dist_cfg.pop('backend', None)
    if 'timeout' in dist_cfg:
        dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend='gloo', **dist_cfg)


def release_distributed():
    """Destroy the process group a run used (a no-op without one). Left to interpreter exit,
    gloo's threads are torn down unjoined and a rank can abort ("terminate called without an
    active exception") after its work has finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
