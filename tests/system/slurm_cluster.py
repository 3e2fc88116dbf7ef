"""A private single-node Slurm (slurmctld + slurmd + munged) for system tests, started and stopped by the tests.

Needs root and Debian's packages (installed with apt-get when missing); `unavailable_reason()` says why not."""
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "scancel", "munged")
PARTITION = "hpcrnn"


def _missing_binaries():
    return [name for name in BINARIES if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]


def unavailable_reason():
    """None when a cluster can be started here; otherwise a one-line reason (for pytest.skip)."""
    if sys.platform != "linux":
        return "a private Slurm needs Linux"
    if os.geteuid() != 0:
        return "a private Slurm needs root (slurmd runs jobs as any user)"
    if _missing_binaries() and not shutil.which("apt-get"):
        return f"Slurm is not installed ({', '.join(_missing_binaries())} missing) and there is no apt-get"
    return None


def install():
    """apt-get installs the Slurm and munge packages when a binary is missing (a no-op when all are there)."""
    if not _missing_binaries():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(command, env=env, check=True, capture_output=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mib():
    with open("/proc/meminfo") as handle:
        kib = int(handle.readline().split()[1])
    return max(256, kib // 1024 - 512)


def slurm_conf(root, host, ports, munge_socket):
    """The text of a minimal slurm.conf: root users, no cgroups, no accounting, pmi2, requeue allowed."""
    lines = [
        "ClusterName=hpcrnntest", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={ports[0]}", f"SlurmdPort={ports[1]}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={munge_socket},cred_expire=10",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=pmi2",
        "JobRequeue=1", "ReturnToService=2", "KillWait=5", "MinJobAge=600", "InactiveLimit=0",
        "MailProg=/bin/true", "SchedulerType=sched/backfill",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mib()} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


class SlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` holds SLURM_CONF for commands run against it."""

    def __init__(self, root=None):
        # Its own folder under /tmp: munged (user munge) cannot reach into pytest's private (0700) tmp folders.
        self.owns_root = root is None
        self.root = str(root) if root else tempfile.mkdtemp(prefix="hpcrnn-slurm-")
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.root, "slurm.conf")
        self.munge_socket = os.path.join(self.root, "munge", "munge.socket")
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self.processes = []

    def start(self, timeout=60):
        install()
        os.chmod(self.root, 0o755)  # munged (user munge) must reach its folder below
        for folder in ("state", "spool"):
            os.makedirs(os.path.join(self.root, folder), exist_ok=True)
        self.start_munge()
        with open(self.conf, "w") as handle:
            handle.write(slurm_conf(self.root, self.host, (free_port(), free_port()), self.munge_socket))
        self.spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])
        self.spawn("slurmd", ["slurmd", "-D", "-f", self.conf])
        self.wait_idle(timeout)
        return self

    def start_munge(self):
        """munged as user munge, with a private key, socket, pid, log and seed file."""
        folder = os.path.dirname(self.munge_socket)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        key = os.path.join(folder, "munge.key")
        with open(key, "wb") as handle:
            handle.write(os.urandom(1024))
        os.chmod(key, 0o400)
        shutil.chown(folder, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        self.spawn("munged", ["munged", "-F", "-f", f"--socket={self.munge_socket}", f"--key-file={key}",
                              f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                              f"--seed-file={folder}/munged.seed"], user="munge")
        self.wait_for(lambda: os.path.exists(self.munge_socket), 20, "munged did not create its socket")

    def spawn(self, name, command, user=None):
        with open(os.path.join(self.root, f"{name}.stdout"), "w") as log:
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                   user=user, group=user))

    def run(self, *command, check=True, timeout=60):
        """Runs a Slurm client command against this cluster; returns stdout."""
        result = subprocess.run(list(command), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def wait_for(self, condition, timeout, message, poll=0.25):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{message}: {', '.join(dead)} exited; logs in {self.root}")
            time.sleep(poll)
        raise TimeoutError(f"{message} within {timeout} s; logs in {self.root}")

    def wait_idle(self, timeout):
        def idle():
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
            return result.returncode == 0 and result.stdout.strip() == "idle"
        self.wait_for(idle, timeout, "the Slurm node did not become idle", poll=0.5)

    def sbatch(self, script, cwd, *options):
        """Submits `script`; returns the job id."""
        out = self.run("sbatch", "--parsable", f"--chdir={cwd}", *options, script)
        return out.strip().split(";")[0]

    def job(self, job_id):
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...)."""
        text = self.run("scontrol", "-o", "show", "job", job_id)
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def wait_job(self, job_id, states, timeout):
        """Waits until the job is in one of `states`; returns its scontrol dict."""
        found = {}

        def reached():
            found.update(self.job(job_id))
            return found.get("JobState") in states
        self.wait_for(reached, timeout, f"job {job_id} did not reach {'/'.join(states)} (last {found.get('JobState')})",
                      poll=0.5)
        return found

    def start_requeued(self, job_id, timeout=60):
        """Starts a requeued (pending) job as soon as Slurm allows it: after the begin time it set (cred_expire + 1 s
        after the requeue), then at once via StartTime=now if the scheduler has not started it yet. Forcing it
        earlier reuses step id N.0 while the old step's slurmstepd still exits, and `srun --mpi=pmi2` fails."""
        begin = datetime.datetime.fromisoformat(self.job(job_id)["StartTime"])
        wait = (begin - datetime.datetime.now()).total_seconds() + 1.0
        if wait > timeout:
            raise TimeoutError(f"job {job_id} may only start at {begin}")
        time.sleep(max(wait, 0.0))
        if self.job(job_id)["JobState"] == "PENDING":   # the scheduler may have started it already
            self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)

    def cancel_all(self, timeout=30):
        """Cancels every job of this private cluster and waits until none is left: shutting slurmd down first
        would leave running jobs' processes behind."""
        try:
            subprocess.run(["scancel", "--full", f"--partition={PARTITION}"], env=self.env, capture_output=True,
                           timeout=10)
            self.wait_for(lambda: not self.run("squeue", "-h", check=False).strip(), timeout, "jobs still running")
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as error:
            print(f"slurm_cluster: {error}", file=sys.stderr)

    def stop(self):
        """Cancels the jobs, runs scontrol shutdown, then ends the daemons this harness started (by their ids)."""
        self.cancel_all()
        try:
            subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
