"""A real, private Slurm cluster for the tests (slurm-wlm + munge from Debian).

Why real: sbatch's directive parsing, array indices, srun's signal forwarding and the torchrun
rendezvous across nodes are what break in practice, and a fake would not show it.

The cluster lives entirely in a temporary directory: its own slurm.conf, munge key and socket,
state, spool, logs and private ports, so it cannot clash with another cluster on the machine.
The daemons run in the foreground as our children (so we hold their pids and reap them), in their
own session (so Ctrl-C in pytest does not stop them before teardown cancels the jobs).
Several nodes on one host use Debian's multiple-slurmd build: ``slurmd -N n1``, ``slurmd -N n2``,
each with its own port and ``NodeAddr=127.0.0.1``.

Usage from a test module::

    from slurm_cluster import slurm_one, slurm_two  # noqa: F401  (fixtures)
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo", "slurmctld", "slurmd", "munged")
FINISHED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",
}


def ensure_slurm() -> None:
    """Install Slurm and munge with apt if missing; skip (with the reason) only if that fails."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster runs its daemons as root (SlurmUser=root); run the tests as root")
    if all(shutil.which(b) for b in BINARIES):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            pytest.skip(f"Slurm is not installed and apt could not install it ({' '.join(cmd[:2])}: {last})")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        pytest.skip(f"apt installed {', '.join(APT_PACKAGES)} but these are still missing: {', '.join(missing)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> str:
    """The node's CPUs, topology and memory as slurmd itself detects them (``slurmd -C``), so the
    node never registers with less than the configuration claims (which would drain it)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0].split()
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return " ".join(f for f in first if f.split("=")[0] in keep)


class SlurmCluster:
    """munged + slurmctld + one slurmd per node, configured under ``root``."""

    def __init__(self, root: Path, nodes: list[str]):
        self.root = Path(root)
        self.nodes = nodes
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # -- set-up ---------------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for d in ("state", "log", "munge-key", "munge-run", *(f"spool/{n}" for n in self.nodes)):
            (r / d).mkdir(parents=True, exist_ok=True)
        # munged refuses a key directory others can read and a socket directory others cannot.
        os.chmod(r / "munge-key", 0o700)
        os.chmod(r / "munge-run", 0o755)
        os.chmod(r, 0o755)
        key = r / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = r / "munge-run" / "munge.socket"
        host = socket.gethostname().split(".")[0]
        hw = node_hardware()
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} {hw} State=UNKNOWN"
            for n in self.nodes
        )
        self.conf.write_text(f"""\
ClusterName=benchtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
SchedulerParameters=batch_sched_delay=0
MinJobAge=3600
KillWait=5
MailProg=/bin/true
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.write_config()
        r = self.root
        self._spawn("munged", [
            "munged", "--foreground", f"--socket={self.munge_socket}",
            f"--key-file={r}/munge-key/munge.key", f"--pid-file={r}/munge-run/munged.pid",
            f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge-key/munged.seed",
        ])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for n in self.nodes:
            self._spawn(f"slurmd-{n}", ["slurmd", "-D", "-f", str(self.conf), "-N", n])
        self._wait(self._nodes_idle, timeout, "nodes did not come up idle")
        return self

    def _nodes_idle(self) -> bool:
        dead = [name for name, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during start-up; logs:\n{self.logs()}")
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        states = dict(zip(out[::2], out[1::2]))
        return all(states.get(n) == "idle" for n in self.nodes)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {timeout:.0f} s; logs:\n{self.logs()}")
            time.sleep(0.2)

    # -- use ------------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def job_states(self, job_id: str | int) -> list[str]:
        """States of a job, one per array task (``squeue -t all`` keeps finished jobs for
        MinJobAge)."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%T", check=False)
        return out.stdout.split()

    def wait_job(self, job_id: str | int, timeout: float = 120) -> list[str]:
        """Wait until every task of the job has finished; returns their states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_id)
            if states and all(s in FINISHED for s in states):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {states} after {timeout:.0f} s; logs:\n{self.logs()}")
            time.sleep(0.3)

    def logs(self, tail: int = 15) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- tear-down ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel every job first (slurmstepd ignores SIGTERM), then stop the daemons by pid,
        slurmd before slurmctld before munged."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--signal=KILL", "--user=root", check=False)
            self.run("scancel", "--user=root", check=False)
            deadline = time.monotonic() + 30
            while self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        order = [n for n in self.procs if n.startswith("slurmd")] + ["slurmctld", "munged"]
        for name in order:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def running_daemons(self) -> list[str]:
        """Daemons still alive (a zombie counts as stopped: /proc/PID/stat state Z)."""
        alive = []
        for name, proc in self.procs.items():
            try:
                state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state != "Z":
                alive.append(name)
        return alive


def _cluster(nodes: list[str]):
    ensure_slurm()
    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    cluster = SlurmCluster(root, nodes)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        left = cluster.running_daemons()
        assert not left, f"daemons still running after stop: {left}"
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_one():
    """A one-node cluster (node n1 with this machine's CPUs and memory)."""
    yield from _cluster(["n1"])


@pytest.fixture(scope="session")
def slurm_two():
    """Two emulated nodes, n1 and n2, both on this host (each claims all of its CPUs)."""
    yield from _cluster(["n1", "n2"])
