"""Self-launch: ``--nproc N`` re-executes the same command under torchrun (single node).

Launching stays here, out of model and measuring code. Under an existing launcher (torchrun,
srun, the DeepSpeed launcher) nothing is re-launched: bench.launch.context reads its environment.

Stopping: the parent forwards SIGTERM / SIGUSR1 to every rank (they stop at the next cell
boundary, agreed by all-reduce) and exits 99 once the job has ended, as a single process does;
on SIGINT (Ctrl-C) it interrupts every rank and exits 130. No process is left behind: a parent
killed outright (SIGKILL, the OOM killer) takes torchrun with it, and each rank dies with torchrun
(PR_SET_PDEATHSIG both ways), so no rank is orphaned.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from bench.errors import BadInput
from bench.launch.signals import PREEMPTED_EXIT


def under_launcher() -> bool:
    from bench.launch.context import started_by_srun  # context imports torch: only when asked

    return "RANK" in os.environ or started_by_srun()


def allotted_cores() -> int:
    """Cores this process may run on (cgroups / SLURM allocations), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_nproc(sizes: list[int], device: str) -> None:
    """``--nproc`` is bounded by what a local launch can place, so a typo (``--nproc 64`` on 2
    cores) is one line, not ranks started until memory runs out: on CUDA one visible GPU per rank
    (two ranks on one GPU make NCCL abort, "Duplicate GPU detected"), on a CPU one allotted core
    per rank. Under a launcher (torchrun, srun) the launcher placed the ranks: nothing to check."""
    largest = max(sizes, default=1)
    if largest <= 1 or under_launcher():
        return
    shown = ",".join(map(str, sizes)) if len(sizes) > 1 else str(largest)
    if on_cuda(device):
        import torch

        gpus = torch.cuda.device_count()
        if largest > gpus:
            raise BadInput(f"--nproc {shown}: {largest} ranks need {largest} GPUs and {gpus} are visible (two ranks "
                           f"on one GPU make NCCL abort); give at most --nproc {max(gpus, 1)}, or --device cpu")
        return
    cores = allotted_cores()
    if largest > cores:
        raise BadInput(f"--nproc {shown}: {largest} ranks on {cores} allotted core(s); give at most --nproc {cores} "
                       "(one core per rank)")


def on_cuda(device: str) -> bool:
    """Whether ``--device`` means CUDA here: ``cuda``, or ``auto`` when torch sees a GPU. A machine
    with no GPU device node (NVIDIA's /dev/nvidia*, ROCm's /dev/kfd) has none, and is answered
    without importing torch (2 s), so the parent of a CPU job of several ranks, which only
    launches them, loads nothing heavy; once torch is loaded, torch answers."""
    if device != "auto":
        return device == "cuda"
    if "torch" not in sys.modules and not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/kfd").exists():
        return False
    import torch

    return torch.cuda.is_available()


def check_out_dir(out: str | None) -> None:
    """A bad ``--out`` (a file, under a file, not writable, empty; a records file that is a
    directory or a symlink) is refused before anything runs or is created."""
    if out is None:
        return
    if not str(out).strip():
        raise BadInput("--out is empty; give a directory, e.g. --out results/my-run")
    path = Path(out)
    check_path_fits(out, path, room=RUN_DIR_ROOM)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {out} is a file, not a directory; choose another --out")
    creatable_under(out, path)
    if path.is_dir():
        from bench.record import RunDir, writer_name

        RunDir(path, writer_name()).check_writable()


def check_out_file(out: str | Path) -> None:
    """A file ``--out`` (a report) is a new path or a regular file, in a directory that exists or
    can be made and that takes new files. Anything else is refused, so that the atomic write
    (a temporary file, then os.replace) never replaces a device node, a FIFO or a symlink (a
    symlink to /proc/self/fd/1, or root's --out /dev/null) with a regular file."""
    if not str(out).strip():
        raise BadInput("--out is empty; give a file, e.g. --out reports/run.html")
    path = Path(out)
    check_path_fits(out, path)
    try:
        mode = path.lstat().st_mode  # lstat: the link itself, not what it points to
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # ENOTDIR (under a file), EACCES, ELOOP, ENAMETOOLONG
        if exc.errno != errno.ENOTDIR:
            raise BadInput(f"--out {out}: {exc.strerror or exc}; choose another --out") from None
        mode = None  # under a file: creatable_under names it
    if mode is not None and not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise BadInput(f"--out {out} is {kind}; the report replaces its file, so give a new path or a regular file")
    creatable_under(out, path.parent)


RUN_DIR_ROOM = 256  # bytes a run directory's own paths add under --out (claims/<hash>.claim, traces/<cell>/...)


def shown_path(out: str | Path, limit: int = 80) -> str:
    """A path as a one-line message shows it: control characters escaped, a long one cut."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(out))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(os.fsencode(str(out)))} bytes)"


def check_path_fits(out: str | Path, path: Path, room: int = 0, flag: str = "--out") -> None:
    """A name longer than the file system takes (NAME_MAX, 255 bytes on most) or a path over
    PATH_MAX (less ``room`` for what is written under it) fails at first use with ENAMETOOLONG,
    after the run has started: refuse it up front. The limits are the nearest existing
    directory's (os.pathconf); os.lstat alone is no check, since it says ENOENT for a long name
    under a directory still to be made."""
    absolute = Path(os.path.abspath(path))
    anchor = absolute
    while not os.path.lexists(anchor) and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        name_max, path_max = os.pathconf(anchor, "PC_NAME_MAX"), os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096  # Linux's
    longest = max((len(os.fsencode(part)) for part in absolute.parts), default=0)
    if longest > name_max:
        raise BadInput(f"{flag} {shown_path(out)}: a name of {longest} bytes, over the {name_max} the file system "
                       f"takes; choose a shorter {flag}")
    if len(os.fsencode(str(absolute))) + room >= path_max:
        raise BadInput(f"{flag} {shown_path(out)}: the path is {len(os.fsencode(str(absolute)))} bytes; the system "
                       f"takes {path_max} in all{f' (and {room} for what bench writes under it)' if room else ''}; "
                       f"choose a shorter {flag}")


_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def creatable_under(out: str | Path, path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (``path`` itself if it exists), checked to be a
    directory that takes new files; ``out`` is the flag's value, for the message."""
    parent = path
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"--out {out} is under a file ({parent}); choose another --out")
    # os.access says yes to root on any directory of a writable mount (/proc, /sys among them):
    # create (and drop at once) an unnamed file where the run directory would be made.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: {parent} is not writable; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        where = f"{parent} is not writable" if parent != Path(out) else "is not writable"
        raise BadInput(f"--out {out}: {where} ({exc.strerror or exc}); choose another --out") from None
    return parent


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


JOB_STATUS_ENV = "BENCH_JOB_STATUS"  # a file the ranks of a self-launched job report a stop in
INTERRUPT_GRACE_S = 30.0  # after Ctrl-C, how long the ranks get to end before they are killed


def report_stop_to_launcher(code: int) -> int:
    """The exit code a rank should use for ``code``: a stop (99) or an interrupt (130) of a job
    that ``relaunch_if_requested`` started is written to its status file and the rank exits 0,
    so torchrun does not report the ranks as failed (a "ChildFailedError" box with a traceback
    for what was an asked-for stop); the parent then exits with ``code`` itself."""
    path = os.environ.get(JOB_STATUS_ENV)
    if not path or code not in (PREEMPTED_EXIT, 130) or "RANK" not in os.environ:
        return code
    try:
        with open(path, "a") as fh:
            fh.write(f"{code}\n")
    except OSError:
        return code
    return 0


def _ranks(job: subprocess.Popen) -> list:
    import psutil

    try:
        return psutil.Process(job.pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []


def _signal_ranks(job: subprocess.Popen, sig: int) -> int:
    """Send ``sig`` to the ranks (torchrun's own children), not torchrun itself, which would kill
    them at once rather than let them stop at a cell boundary, and not the ranks' helpers (data
    loader workers), which their rank ends. Returns how many ranks it reached."""
    import psutil

    reached = 0
    for proc in _ranks(job):
        try:
            proc.send_signal(sig)
            reached += 1
        except psutil.NoSuchProcess:
            pass
    return reached


def _kill_job(job: subprocess.Popen) -> None:
    """SIGKILL torchrun and everything under it."""
    import psutil

    try:
        procs = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in reversed(procs):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal this process gets when the thread that forked it ends
LAUNCHER_PID_ENV = "BENCH_LAUNCHER_PID"  # the bench process whose torchrun started this rank


def _prctl():
    """libc's prctl (ctypes: the standard library has no binding), None where there is none (not Linux)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent_hook():
    """A preexec_fn for a child launcher (torchrun, a study's world size): SIGKILL when this
    process dies, so a parent killed outright (SIGKILL cannot be forwarded) takes the job with it
    at once; the cell in flight is lost, as it is for a single process killed so. prctl is looked
    up here, before the fork, so the child only makes the one call. None where there is no prctl."""
    prctl = _prctl()
    if prctl is None:
        return None
    sig = int(signal.SIGKILL)

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, sig)

    return hook


def own_job_world_size() -> int | None:
    """In a rank of a job ``relaunch_if_requested`` started: its world size (torchrun's
    WORLD_SIZE), which is what ``--nproc`` means there. A --config file's ``nproc: "1,2"`` is
    read again by every rank, and is the parent's study, not the rank's (issue 27 group 4).
    None in any other process."""
    size = os.environ.get("WORLD_SIZE", "")
    if LAUNCHER_PID_ENV not in os.environ or "RANK" not in os.environ or not size.isdigit():
        return None
    return int(size)


def die_with_launcher() -> None:
    """In a rank of a job ``relaunch_if_requested`` started: SIGKILL when torchrun (the parent)
    dies. torchrun starts its ranks itself, each in its own session, so they cannot be given a
    preexec_fn; the rank asks for it first thing, then checks that its torchrun, started by the
    launcher it names, is still its parent (else it was orphaned before asking, and ends)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    prctl = _prctl()
    if not launcher.isdigit() or "RANK" not in os.environ or prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    import psutil

    try:
        orphaned = psutil.Process(os.getppid()).ppid() != int(launcher)
    except psutil.Error:
        orphaned = True
    if orphaned:
        os._exit(128 + int(signal.SIGKILL))


def relaunch_if_requested(nproc: int, extra_args: list[str] | None = None, threads_per_rank: int | None = None) -> None:
    """When ``nproc > 1`` and no launcher started us, run this command under torchrun with
    ``nproc`` ranks and exit with its status (torchrun ends every rank when one dies).

    torchrun runs in its own session, so a Ctrl-C at the terminal reaches this process only and
    the ranks get it once, from here. SIGTERM / SIGUSR1 are forwarded to the ranks, which stop at
    the next cell boundary and report it in a status file (see report_stop_to_launcher); this
    process then exits 99. SIGINT is forwarded too; ranks still running ``INTERRUPT_GRACE_S``
    later (or at a second Ctrl-C) are killed; exit 130."""
    if nproc <= 1 or under_launcher():
        return
    fd, status_path = tempfile.mkstemp(prefix="bench-job-", suffix=".status")
    os.close(fd)
    env = _rank_env(nproc, threads_per_rank, status_path)
    cmd = torchrun_command(sys.argv[1:], nproc, extra_args)
    forwarder = _Forwarder()
    # Handlers first: a signal while torchrun starts is kept and delivered once ranks exist.
    previous = {s: signal.signal(s, forwarder.forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        forwarder.job = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent_hook())
        code = forwarder.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        reported = _read_status(status_path)
    _exit_like_the_job(nproc, code, signal.SIGINT in forwarder.stopped, reported)


def torchrun_command(argv: list[str], nproc: int, extra_args: list[str] | None = None) -> list[str]:
    """torchrun running this command (``argv``, less ``--nproc``) as ``nproc`` ranks. The ranks
    are not given ``--nproc N``: torchrun's own parser takes ``--nproc`` for an ambiguous
    abbreviation of ``--nproc-per-node`` wherever it stands; a rank reads its world size from
    the environment instead (own_job_world_size)."""
    from bench.launch.context import free_port

    args = strip_option(argv, "--nproc") + list(extra_args or [])
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
        "--monitor-interval", "1",
        "-m", "bench.cli", *args,
    ]


def _rank_env(nproc: int, threads_per_rank: int | None, status_path: str) -> dict[str, str]:
    """The ranks' environment: threads per rank (never overwriting what SLURM or the user set)
    and the status file they report a stop in."""
    env = dict(os.environ)
    if threads_per_rank:
        env["OMP_NUM_THREADS"] = str(threads_per_rank)
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, allotted_cores() // nproc))
    env[JOB_STATUS_ENV] = status_path
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    return env


class _Forwarder:
    """Forwards the signals this process gets to torchrun's ranks, keeping those that arrive
    before any rank exists, and kills the job after a Ctrl-C grace period or a second Ctrl-C."""

    def __init__(self) -> None:
        self.job: subprocess.Popen | None = None
        self.stopped: list[int] = []  # every signal received, in order
        self.pending: list[int] = []  # signals not yet delivered (no rank started yet)
        self.interrupted_at: float | None = None

    def forward(self, signum, frame) -> None:
        self.stopped.append(signum)
        if self.job is None or not _signal_ranks(self.job, signum):
            self.pending.append(signum)

    def wait(self) -> int:
        """torchrun's exit code, delivering pending signals and enforcing the grace meanwhile."""
        import time

        assert self.job is not None
        while True:
            try:
                return self.job.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if self.pending and _ranks(self.job):
                for sig in dict.fromkeys(self.pending):
                    _signal_ranks(self.job, sig)
                self.pending.clear()
            if signal.SIGINT in self.stopped:
                self.interrupted_at = self.interrupted_at or time.monotonic()
                grace_over = time.monotonic() - self.interrupted_at > INTERRUPT_GRACE_S
                if self.stopped.count(signal.SIGINT) > 1 or grace_over:
                    _kill_job(self.job)


def _read_status(status_path: str) -> set[int]:
    """The stop codes the ranks reported (and the status file removed)."""
    try:
        reported = {int(x) for x in Path(status_path).read_text().split() if x.isdigit()}
    except OSError:
        reported = set()
    Path(status_path).unlink(missing_ok=True)
    return reported


def _exit_like_the_job(nproc: int, code: int, interrupted: bool, reported: set[int]) -> None:
    """Exit as one process would have: 130 interrupted, 99 stopped at a boundary, else torchrun's code."""
    if interrupted or 130 in reported:
        print(f"bench: interrupted the {nproc}-rank job", file=sys.stderr)
        sys.exit(130)
    if PREEMPTED_EXIT in reported:
        print(f"bench: stopped the {nproc}-rank job at a cell boundary; rerun with the same --out to resume",
              file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    if code != 0:
        print(f"bench: {nproc}-rank job failed (exit {code}); see the rank errors above", file=sys.stderr)
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# issue 19 A: a local scaling study, --nproc 1,2,4


def study_command(argv: list[str], nproc: int, out: str) -> list[str]:
    """One world size of a study: the same command with ``--nproc N --out OUT --no-report``."""
    args = strip_option(strip_option(argv, "--nproc"), "--out")
    return [sys.executable, "-m", "bench.cli", *args, "--nproc", str(nproc), "--out", out, "--no-report"]


def study_env(nproc: int, threads_per_rank: int | None) -> dict[str, str]:
    """A world size's environment: at world size 1 the same default as the ranks of the larger
    ones (allotted cores / N, so the total threads stay fixed on a CPU) unless --threads or
    OMP_NUM_THREADS says otherwise; world sizes above 1 get theirs from relaunch_if_requested."""
    env = dict(os.environ)
    if nproc == 1 and not threads_per_rank and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(allotted_cores())
    return env


class ChildRunner:
    """Runs bench processes one at a time, each in its own session (a Ctrl-C at the terminal
    reaches it once, from here) and dying with this process (PR_SET_PDEATHSIG). While in use
    (``with``), SIGTERM / SIGUSR1 / SIGINT received here are forwarded to the process running and
    remembered (``received``), so the caller starts no further one: the one loop of a scaling
    study (``run_study``) and of ``bench run --repeats auto`` (``run_in_turn``)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.current: list[subprocess.Popen] = []
        self._previous: dict = {}

    def forward(self, signum, frame) -> None:
        self.received.append(signum)
        for job in self.current:
            try:
                job.send_signal(signum)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "ChildRunner":
        self._previous = {s: signal.signal(s, self.forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``cmd`` (stdout and stderr are this process's) and wait for its exit code."""
        job = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent_hook())
        self.current[:] = [job]
        try:
            return job.wait()
        finally:
            self.current.clear()

    @property
    def stop_code(self) -> int | None:
        """130 after a Ctrl-C, 99 after another stop signal, None when none came."""
        if not self.received:
            return None
        return 130 if signal.SIGINT in self.received else PREEMPTED_EXIT


def run_study(sizes: list[int], out: str, threads_per_rank: int | None, argv: list[str] | None = None) -> int:
    """Run each world size of ``sizes`` in ascending order as its own ``bench`` process (one code
    path for every size, 1 included) into ``out``; returns the study's exit code.

    A stop (99) or an interrupt (130) of one world size ends the study with that code and runs no
    further size; a failed size is reported and the others still run (exit 1 at the end). Each
    size runs in its own session, so a Ctrl-C reaches it once, from here (the size's own launcher
    forwards it to its ranks); SIGTERM / SIGUSR1 are forwarded the same way (``ChildRunner``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    failed: list[int] = []
    with ChildRunner() as runner:
        for n in sorted(sizes):
            if runner.received:  # a stop that arrived between two world sizes
                break
            print(f"bench: scaling study: world size {n} of {','.join(map(str, sorted(sizes)))} -> {out}",
                  file=sys.stderr)
            code = runner.run(study_command(argv, n, out), study_env(n, threads_per_rank))
            if code in (PREEMPTED_EXIT, 130):
                print(f"bench: scaling study stopped at world size {n}; rerun with the same --out to resume",
                      file=sys.stderr)
                return code
            if code != 0:
                print(f"bench: scaling study: world size {n} failed (exit {code}); going on with the others",
                      file=sys.stderr)
                failed.append(n)
    if runner.stop_code is not None:
        return runner.stop_code
    if failed:
        print(f"bench: scaling study: world size(s) {','.join(map(str, failed))} failed", file=sys.stderr)
        return 1
    return 0


def run_in_turn(next_command: Callable[[int], list[str] | None], most: int,
                env: dict[str, str] | None = None) -> int:
    """Fresh bench processes one after another (``ChildRunner``), each the command
    ``next_command(done)`` gives once ``done`` processes have ended, until it gives None or
    ``most`` have run; returns the first non-zero exit code (a stop: 99, an interrupt: 130), a
    stop signal's code when one came between two processes, else 0. ``next_command`` runs with
    the signal handlers in place, so a Ctrl-C while it decides starts no further process."""
    done = 0
    with ChildRunner() as runner:
        while done < most and not runner.received:
            cmd = next_command(done)
            if cmd is None or runner.received:
                break
            code = runner.run(cmd, env)
            if code != 0:
                return code
            done += 1
    return runner.stop_code or 0
