"""A real single-node SLURM cluster on this machine, for the SLURM workflow test and for trying the
SLURM profile by hand.

It writes slurm.conf and gres.conf for localhost into a scratch directory, creates a munge key
there, and starts munged, slurmctld and slurmd directly (no systemd; containers often lack it).
Everything the cluster writes (state, spool, logs, sockets, pid files) stays in that directory, the
ports are free ones picked at start, and the clients find the cluster through `SLURM_CONF`. One
exception: while the cluster runs, /etc/slurm/slurm.conf is a symlink to its slurm.conf, because
SLURM commands inside jobs look there (Snakemake's jobstep executor drops SLURM_CONF from srun's
environment); it is only created where no such file exists, and removed at stop. No cgroups
(proctrack/linuxproc, task/none), so it runs in containers. The cluster keeps no accounting (no
slurmdbd, `sacct` does not work), like many small clusters; finished jobs stay visible to
`squeue`/`scontrol` for `MinJobAge` seconds.

It declares pretend GPUs (GRES bound to /dev/null etc.): SLURM allocates and accounts `--gpus=1`
requests like on a GPU node, so the test can check which jobs asked for a GPU, while torch in the
job finds no CUDA device and the CPU path runs.

By hand (as root, with `slurm-wlm` and `munge` installed):

    python tests/support/slurm_cluster.py start /tmp/slurm    # prints the `export SLURM_CONF=...` line
    python tests/support/slurm_cluster.py stop /tmp/slurm
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "srun")
PACKAGES = "slurm-wlm munge"
#: seconds a finished job stays in slurmctld's memory (visible to squeue --states=all and scontrol)
MIN_JOB_AGE = 3600
NODE = "localhost"
#: first line of the slurm.conf written here
#: (the check looks for the text before the parenthesis, so configurations written before the move count too)
MARKER = "single-node SLURM cluster for affpipe's tests (written by tests/support/slurm_cluster.py)"
PARTITION = "debug"
#: SLURM's default configuration path: linked to the cluster's slurm.conf while it runs, because SLURM
#: commands inside jobs look there (the jobstep executor drops SLURM_CONF from srun's environment)
ETC_CONF = Path("/etc/slurm/slurm.conf")
#: device files the pretend GPUs are bound to
PRETEND_GPUS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster; the message says why (used as the test's skip reason)."""


def why_unavailable() -> str | None:
    """None when a cluster can be started here, otherwise the precise reason it cannot."""
    if sys.platform != "linux":
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root (the daemons run as root here)"
    missing = [p for p in (*DAEMONS, *CLIENTS) if _which(p) is None]
    if missing:
        return (f"SLURM/munge programs not found: {', '.join(missing)} (install the Debian packages "
                f"`{PACKAGES}`; `make slurm-deps` does it as root)")
    if (ETC_CONF.exists() or ETC_CONF.is_symlink()) and not (
            ETC_CONF.is_symlink() and _stale(Path(os.path.realpath(ETC_CONF)))):
        return f"{ETC_CONF} exists: this machine has a SLURM configuration of its own, which is left alone"
    return None


def _which(prog: str) -> str | None:
    return shutil.which(prog, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_mem_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


@dataclass
class Cluster:
    """A started cluster: its scratch directory and the environment its clients need."""

    root: Path
    cpus: int
    mem_mb: int

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF (for sbatch/squeue/... and for Snakemake's SLURM executor)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -d -o` of one job as a dict (while the job is younger than MinJobAge);
        `JOB_GRES` is its allocated generic resources (`gpu:1`, or `(null)`)."""
        out = self.run("scontrol", "show", "job", "-d", "-o", str(job_id)).stdout.strip()
        info = {}
        for item in out.split():
            key, sep, value = item.partition("=")
            if sep:
                info.setdefault(key, value)
        return info

    def stop(self) -> None:
        stop(self.root)


def write_config(root: Path, cpus: int, mem_mb: int, ctld_port: int) -> None:
    """slurm.conf and gres.conf of a one-node cluster with ``cpus`` CPUs and 90 % of ``mem_mb``: more
    than the machine has oversubscribe it (slurmd then takes the configured figures,
    ``SlurmdParameters=config_overrides``)."""
    etc, state, spool, log, run = (root / d for d in ("etc", "state", "spool", "log", "run"))
    for d in (etc, state, spool, log, run):
        d.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    # leave some memory to the OS and the Snakemake process on the submit side
    real_mem = max(1024, int(mem_mb * 0.9))
    gpus = max(1, min(cpus, len(PRETEND_GPUS)))
    oversubscribed = cpus > (os.cpu_count() or 1) or mem_mb > machine_mem_mb()
    overrides = "SlurmdParameters=config_overrides\n" if oversubscribed else ""
    conf = f"""\
# {MARKER}
ClusterName=affpipe-local
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={run}/munge.socket
StateSaveLocation={state}
SlurmdSpoolDir={spool}/slurmd-%n
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd-%n.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldDebug=info
MailProg=/bin/true
SlurmdDebug=info
# no cgroups: process tracking through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# no accounting storage (no slurmdbd): `sacct` does not work here, status comes from squeue
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# keep finished jobs in slurmctld for an hour, so that `squeue --states=all` reports them
MinJobAge={MIN_JOB_AGE}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
Waittime=0
GresTypes=gpu
{overrides}NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_mem} Gres=gpu:{gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
    (etc / "slurm.conf").write_text(conf)
    # pretend GPUs, as many as CPUs (up to 4) so that GPU jobs do not queue behind each other: slurmd
    # drops GPUs without a device file, so each is bound to a harmless character device; SLURM
    # allocates and accounts them like real ones, CUDA finds no device behind them
    (etc / "gres.conf").write_text("".join(f"NodeName={NODE} Name=gpu File={dev}\n" for dev in PRETEND_GPUS[:gpus]))
    (spool / f"slurmd-{NODE}").mkdir(exist_ok=True)


def _start_munged(root: Path) -> None:
    run, etc, log = root / "run", root / "etc", root / "log"
    key = etc / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        [_which("munged"), "--force", f"--key-file={key}", f"--socket={run}/munge.socket",
         f"--pid-file={run}/munged.pid", f"--log-file={log}/munged.log", f"--seed-file={run}/munged.seed"],
        check=True, capture_output=True, text=True, timeout=30,
    )


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not written)"
    return f"{path}:\n" + "\n".join(lines[-n:])


def _stale(conf: Path) -> bool:
    """True when `conf` is gone, or is a slurm.conf written here whose slurmctld no longer runs."""
    try:
        ours = MARKER.split(" (")[0] in conf.read_text().splitlines()[0]
    except (OSError, IndexError):
        return True
    if not ours:
        return False
    try:
        os.kill(int((conf.parent.parent / "run" / "slurmctld.pid").read_text().strip()), 0)
    except (OSError, ValueError):
        return True
    return False


def start(root: Path, timeout: float = 60, *, cpus: int | None = None, mem_mb: int | None = None) -> Cluster:
    """Write the configuration, start munged, slurmctld and slurmd, and wait for the node to be idle.
    The node has ``cpus`` CPUs and 90 % of ``mem_mb`` (default: the machine's; more oversubscribe it)."""
    reason = why_unavailable()
    if reason:
        raise ClusterUnavailable(reason)
    root = Path(root).resolve()
    link = ETC_CONF
    if link.is_symlink() and _stale(Path(os.path.realpath(link))):
        link.unlink()  # left behind by a cluster of ours that is gone (directory removed, or killed)
    if link.exists() or link.is_symlink():
        raise ClusterUnavailable(f"{link} exists (this machine has a SLURM configuration of its own; "
                                 f"not replacing it)")
    cpus, mem_mb = cpus or os.cpu_count() or 1, mem_mb or machine_mem_mb()
    ctld_port = _free_port()
    write_config(root, cpus, mem_mb, ctld_port)
    cluster = Cluster(root, cpus, mem_mb)
    env = cluster.env
    try:
        _start_munged(root)
    except subprocess.CalledProcessError as err:
        raise ClusterUnavailable(f"munged did not start: {err.stderr.strip()}\n{_log_tail(root / 'log/munged.log')}")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(cluster.conf)
    daemons = (("slurmctld", ["-f", str(cluster.conf), "-c", "-i"]), ("slurmd", ["-f", str(cluster.conf), "-N", NODE]))
    for daemon, args in daemons:
        res = subprocess.run([_which(daemon), *args], env=env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            stop(root)
            raise ClusterUnavailable(f"{daemon} did not start (exit {res.returncode}): {res.stderr.strip()}\n"
                                     f"{_log_tail(root / 'log' / (daemon + '.log'))}")
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        res = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        state = (res.stdout or res.stderr).strip()
        if res.returncode == 0 and state.rstrip("*") == "idle":
            return cluster
        time.sleep(0.5)
    stop(root)
    raise ClusterUnavailable(f"node `{NODE}` not idle after {timeout:.0f} s (sinfo: {state!r})\n"
                             f"{_log_tail(root / 'log/slurmctld.log')}\n{_log_tail(root / 'log/slurmd.log')}")


def stop(root: Path, timeout: float = 20) -> None:
    """Stop the daemons started under `root` (by their pid files), slurmd first."""
    run = Path(root) / "run"
    for pidfile in (*sorted(run.glob("slurmd-*.pid")), run / "slurmctld.pid", run / "munged.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
    # the link to this cluster's configuration (never a file or a link that is not ours)
    if ETC_CONF.is_symlink() and os.path.realpath(ETC_CONF) == str((Path(root) / "etc/slurm.conf").resolve()):
        ETC_CONF.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("dir", type=Path, help="scratch directory for the cluster's config, state and logs")
    parser.add_argument("--cpus", type=int, default=None,
                        help="the node's CPUs (default: the machine's; more oversubscribe its cores)")
    parser.add_argument("--mem-mb", type=int, default=None,
                        help="the node's memory in MB, 90 %% of it for jobs (default: the machine's)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        stop(args.dir)
        return 0
    try:
        cluster = start(args.dir, cpus=args.cpus, mem_mb=args.mem_mb)
    except ClusterUnavailable as err:
        print(f"cannot start a local SLURM cluster: {err}", file=sys.stderr)
        return 1
    print(f"SLURM cluster up: 1 node, {cluster.cpus} CPUs, partition `{PARTITION}`; logs in {cluster.root}/log")
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
