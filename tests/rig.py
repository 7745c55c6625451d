"""A multi-host Ray cluster on one machine: `python -m tests.rig up|down|status` and the `rig` pytest fixture.

Why: `ray.cluster_utils.Cluster` puts every node on one loopback address and one disk, so it cannot see what breaks
across hosts (a worker logging to its own 127.0.0.1, a "shared" path that is node-local). Here every node is a host
of its own as far as a process can tell:

- its own network namespace (`ip netns`), with its own loopback and one address on a bridge the rig creates
  (10.231.11.0/24; the bridge's .254 is the default route, so Ray finds the node's address by itself);
- its own PID, UTS and mount namespace: a private tmpfs on /tmp and a private home (`~` = /tmp/home), so nothing
  node-local is shared by accident; `ray stop` and `pkill` in cluster.yaml's commands only see that node;
- a shared folder mounted at /mnt/shared on every node: the EFS stand-in of cluster.yaml.

The head runs cluster.yaml's own `head_setup_commands` and `head_start_ray_commands` (Ray, then the MLflow server
exactly as cluster.yaml starts it); the workers its `worker_start_ray_commands`, with the environment the cluster
launcher gives them (`RAY_HEAD_IP`, `RAY_OVERRIDE_RESOURCES` from the node type, here with logical GPUs). Replaced:
the cloud-only `setup_commands` (apt, the EFS mount, pip install: the rig links this checkout and its venv instead)
and `--autoscaling-config` (the AWS provider). A moto S3 server listens on the head's address (port 9000).

Teardown is by PID: each node's PID-namespace init is SIGKILLed, which makes the kernel end every process in that
namespace (Ray's daemons, MLflow, moto, a sweep driver), then the namespaces and the bridge are deleted. `down`
reads the state file and is idempotent; `up` first tears down whatever a previous rig left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
NAME = os.environ.get("ROBUSTIFY_RIG_NAME", "rig11")
SUBNET = os.environ.get("ROBUSTIFY_RIG_SUBNET", "10.231.11")
BASE = Path(os.environ.get("ROBUSTIFY_RIG_DIR", f"/tmp/{NAME}"))
BRIDGE = f"{NAME}br"
GATEWAY = f"{SUBNET}.254"
S3_PORT = 9000
MLFLOW_PORT = 5000
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Node:
    name: str
    ip: str
    resources: dict
    init_pid: int = 0  # host PID of the node's PID-namespace init


@dataclass
class Rig:
    nodes: list[Node] = field(default_factory=list)
    shared: str = str(BASE / "shared")
    started_s: float = 0.0

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.head.ip}:{MLFLOW_PORT}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.head.ip}:{S3_PORT}"

    def env(self, node: Node, extra: dict | None = None) -> dict[str, str]:
        """What a login shell on `node` has: the project's venv on PATH, a private home, the S3 endpoint."""
        env = {
            "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/tmp/home",
            "TMPDIR": "/tmp",
            "PYTHONPATH": "/tmp/home/robustify",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "ROBUSTIFY_S3_LOCK_LEASE_S": "20",  # a killed host's cache lock is taken over sooner
            **S3_KEYS,
        }
        for k in ("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",):
            if k in os.environ:
                env[k] = os.environ[k]
        return {**env, **(extra or {})}

    def cmd(self, node: Node, command: str, extra_env: dict | None = None) -> list[str]:
        """argv running `command` (bash) on `node`, in its working directory (the project, as ~/robustify)."""
        env = [f"{k}={v}" for k, v in self.env(node, extra_env).items()]
        enter = ["nsenter", "-t", str(node.init_pid), "-n", "-m", "-p", "-u", "--"]
        return [*enter, "env", "-i", *env, "bash", "-c", f"cd /tmp/home/robustify && {command}"]

    def sh(self, node: Node, command: str, timeout: float = 120, check: bool = True, **kw) -> str:
        out = subprocess.run(self.cmd(node, command, kw.get("env")), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(
                f"{node.name}: {command!r} exited {out.returncode}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
            )
        return out.stdout

    def popen(self, node: Node, command: str, log: Path, env: dict | None = None) -> subprocess.Popen:
        f = open(log, "ab")
        try:
            return subprocess.Popen(self.cmd(node, command, env), stdout=f, stderr=subprocess.STDOUT)
        finally:
            f.close()


# ------------------------------------------------------------------------------------------------ up


def cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# the node's PID 1: reaps the daemons Ray and nohup leave behind, so `ray stop` sees them gone
_REAPER = "import os, time\nwhile True:\n  try: os.wait()\n  except ChildProcessError: time.sleep(1)"


def _node_init(node: Node, shared: Path) -> int:
    """Start the node's namespaces; returns the host PID of its PID-namespace init (a bash that waits forever)."""
    prep = " && ".join(
        [
            "mount --make-rprivate /",
            "mount -t tmpfs tmpfs /mnt",
            "mkdir -p /mnt/shared",
            f"mount --bind {shlex.quote(str(shared))} /mnt/shared",
            "mkdir -p /mnt/robustify",  # the checkout, visible even when it lives under the host's /tmp
            f"mount --bind {shlex.quote(str(ROOT))} /mnt/robustify",
            "mount -t tmpfs tmpfs /tmp",
            "mkdir -p /tmp/home",
            "ln -s /mnt/robustify /tmp/home/robustify",
            f"ln -s {shlex.quote(str(VENV))} /tmp/home/venv",
            f"hostname {node.name}",
        ]
    )
    script = f"{prep} && echo ready && exec python3 -c {shlex.quote(_REAPER)}"
    log = open(BASE / f"{node.name}.init.log", "wb")  # fresh: an old "ready" must not end the wait early
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            f"{NAME}-{node.name}",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        with contextlib.suppress(OSError):
            pids = kids.read_text().split()
            if pids and "ready" in (BASE / f"{node.name}.init.log").read_text():
                return int(pids[0])
        if proc.poll() is not None:
            raise RuntimeError(f"node {node.name} did not start: {(BASE / f'{node.name}.init.log').read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"node {node.name}: namespaces not ready after 20 s")


def _network(nodes: list[Node]) -> None:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    for i, node in enumerate(nodes):
        _attach(node, i)


def _attach(node: Node, index: int) -> None:
    """The node's network namespace, with lo and one veth on the rig's bridge (its default route)."""
    if True:
        ns, host_end = f"{NAME}-{node.name}", f"{NAME}v{index}"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", host_end, "master", BRIDGE, "up")
        for argv in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{node.ip}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("route", "add", "default", "via", GATEWAY),
        ):
            _run("ip", "-n", ns, *argv)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.5)
    raise RuntimeError(f"rig: timed out after {timeout:.0f} s waiting for {what}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status < 500


def _launcher_cmd(command: str) -> str:
    """A cluster.yaml start command as the rig runs it: the AWS autoscaler config is the cloud-only part."""
    return " ".join(w for w in command.split(" ") if not w.startswith("--autoscaling-config="))


def _phase(t0: float, what: str) -> None:
    with open(BASE / "up.log", "a") as f:
        f.write(f"{time.monotonic() - t0:6.1f} s  {what}\n")


def up(n_workers: int = 2, worker_resources: dict | None = None) -> Rig:
    """Tear down any previous rig, then start the namespaces, the network, the head, S3, MLflow and the workers."""
    down(quiet=True)
    t0 = time.monotonic()
    BASE.mkdir(parents=True, exist_ok=True)
    (BASE / "up.log").unlink(missing_ok=True)
    shared = BASE / "shared"
    shutil.rmtree(shared, ignore_errors=True)  # a fresh EFS: nothing cached or tracked by an earlier rig
    shared.mkdir()
    os.chmod(shared, 0o777)
    worker_res = worker_resources or {"CPU": 1, "GPU": 1}
    rig = Rig(nodes=[Node("head", f"{SUBNET}.1", {"CPU": 1, "trial_driver": 1000})])
    rig.nodes += [Node(f"worker{i}", f"{SUBNET}.{2 + i}", dict(worker_res)) for i in range(n_workers)]
    _save(rig)  # before anything exists: `down` can always find what `up` made
    _network(rig.nodes)
    _phase(t0, "network")
    for node in rig.nodes:
        node.init_pid = _node_init(node, shared)
        _save(rig)
    _phase(t0, "namespaces")
    cfg = cluster_config()
    head = rig.head
    launcher = {"RAY_OVERRIDE_RESOURCES": json.dumps(head.resources), "RAY_HEAD_IP": head.ip}
    for c in [*cfg.get("head_setup_commands", []), *cfg["head_start_ray_commands"]]:
        rig.sh(head, _launcher_cmd(c), timeout=180, env=launcher)
    _phase(t0, "head: cluster.yaml head_setup_commands + head_start_ray_commands")
    rig.popen(head, f"exec moto_server -H {head.ip} -p {S3_PORT}", BASE / "moto.log")
    _wait(lambda: _http_ok(f"{rig.s3_endpoint}/moto-api/"), 60, "the S3 server")
    _wait(lambda: _http_ok(f"{rig.mlflow_uri}/health"), 120, "the MLflow server on the head")
    _phase(t0, "S3 and MLflow answer")
    starts = []  # the workers start side by side, as the launcher's updaters do
    for w in rig.workers:
        env = {"RAY_OVERRIDE_RESOURCES": json.dumps(w.resources), "RAY_HEAD_IP": head.ip}
        cmds = " && ".join(f"( {_launcher_cmd(c)} )" for c in cfg["worker_start_ray_commands"])
        starts.append(rig.popen(w, cmds, BASE / f"{w.name}.start.log", env=env))
    for w, p in zip(rig.workers, starts, strict=True):
        if p.wait(timeout=180) != 0:
            raise RuntimeError(
                f"{w.name}: worker_start_ray_commands failed: {(BASE / f'{w.name}.start.log').read_text()[-2000:]}"
            )
    _phase(t0, "workers: worker_start_ray_commands")
    _wait(lambda: rig.alive_nodes() == len(rig.nodes), 120, f"{len(rig.nodes)} Ray nodes")
    _phase(t0, "all nodes alive")
    rig.started_s = time.monotonic() - t0
    _save(rig)
    return rig


def alive_nodes(rig: Rig) -> int:
    code = "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    return int(rig.sh(rig.head, f"python -c {shlex.quote(code)}", timeout=120).strip().splitlines()[-1])


Rig.alive_nodes = alive_nodes  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ down


def _save(rig: Rig) -> None:
    BASE.mkdir(parents=True, exist_ok=True)
    (BASE / "state.json").write_text(json.dumps(asdict(rig), indent=1))


def load() -> Rig | None:
    try:
        data = json.loads((BASE / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return Rig(nodes=[Node(**n) for n in data["nodes"]], shared=data["shared"], started_s=data.get("started_s", 0))


def _ns_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _pids_in(netns: set[tuple[int, int]]) -> list[int]:
    """Host PIDs of every process inside one of these network namespaces (each node's init included)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid() and _ns_inode(f"{d}/ns/net") in netns:
            out.append(int(d.name))
    return out


def _rig_netns() -> list[str]:
    return [ns.split()[0] for ns in _run("ip", "netns", "list").stdout.splitlines() if ns.startswith(f"{NAME}-")]


def down(quiet: bool = False) -> float:
    """SIGKILL every process in the rig's network namespaces, by PID: each node's PID-namespace init first (the
    kernel then ends every process of that node), then anything else found there; delete the namespaces, the
    veths and the bridge. Idempotent (works from the namespaces themselves, the state file is only a hint);
    returns the seconds it took."""
    t0 = time.monotonic()
    rig = load()
    names = set(_rig_netns()) | {f"{NAME}-{n.name}" for n in (rig.nodes if rig else [])}
    inodes = {i for i in (_ns_inode(f"/run/netns/{ns}") for ns in names) if i is not None}
    deadline = time.monotonic() + 30
    while inodes and time.monotonic() < deadline:
        pids = _pids_in(inodes)
        if not pids:
            break
        inits = [p for p in pids if Path(f"/proc/{p}/status").is_file() and _is_ns_init(p)]
        for pid in inits or pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for ns in sorted(names):
        _run("ip", "netns", "del", ns, check=False)
    links = [ln.split("@")[0].split()[0] for ln in _run("ip", "-br", "link").stdout.splitlines()]
    for link in links:
        if link.startswith(f"{NAME}v") or link == BRIDGE:
            _run("ip", "link", "del", link, check=False)
    with contextlib.suppress(OSError):
        (BASE / "state.json").unlink()
    took = time.monotonic() - t0
    if not quiet:
        print(f"rig {NAME}: down in {took:.1f} s")
    return took


def _is_ns_init(pid: int) -> bool:
    """PID 1 of its own PID namespace (the last NSpid field)?"""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[-1] == "1"
    return False


# The autoscaling cluster: Ray's fake multi-node provider (the autoscaler launches and removes real raylets on
# the host it runs on), with cluster.yaml's shape: a head with the trial_driver resource, GPU workers from zero.
AUTOSCALING = {
    "cluster_name": "robustify-autoscaling",
    "max_workers": 2,
    "provider": {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    },
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 1, "trial_driver": 1000}, "node_config": {}, "max_workers": 0},
        "gpu_1x": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    },
    "head_node_type": "ray.head.default",
    "auth": {},
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.25,
    "docker": {},
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
}


def add_autoscaling_cluster(rig: Rig, name: str = "auto") -> Node:
    """A second cluster on its own host (namespace) of the rig: a head whose autoscaler launches GPU workers (from
    zero) for pending demand and removes them when idle. Its config is where the launcher writes it on a real head
    (~/ray_bootstrap_config.yaml), so the sweep reads the GPUs the cluster can reach from it."""
    node = Node(
        name, f"{SUBNET}.{10 + len(rig.nodes)}", AUTOSCALING["available_node_types"]["ray.head.default"]["resources"]
    )
    rig.nodes.append(node)
    _save(rig)
    _attach(node, len(rig.nodes) - 1)
    node.init_pid = _node_init(node, Path(rig.shared))
    _save(rig)
    cfg = shlex.quote(json.dumps(AUTOSCALING))
    rig.sh(node, f"echo {cfg} > ~/ray_bootstrap_config.yaml")
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    start = (
        "ray start --head --port=6379 --autoscaling-config=$HOME/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1"
        " --num-cpus=1 --resources='{\"trial_driver\": 1000}'"
    )
    rig.sh(node, start, timeout=240, env=env)
    return node


def kill_node(node: Node) -> list[int]:
    """SIGKILL every process of `node` but its init, by PID (a host losing its Ray processes at once, as in a
    crash); returns the PIDs killed."""
    inode = _ns_inode(f"/run/netns/{NAME}-{node.name}")
    pids = [p for p in _pids_in({inode} if inode else set()) if p != node.init_pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def s3_client(rig: Rig):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=rig.s3_endpoint,
        region_name="us-east-1",
        **{
            "aws_access_key_id": S3_KEYS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        },
    )


def leftovers() -> list[str]:
    """What of a rig still exists: namespaces, the bridge, processes in the rig's namespaces."""
    left = _rig_netns()
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        left.append(BRIDGE)
    return left


def main(argv: list[str]) -> int:
    verb = argv[0] if argv else "status"
    if verb == "up":
        rig = up()
        print(
            f"rig {NAME}: up in {rig.started_s:.1f} s; head {rig.head.ip}, MLflow {rig.mlflow_uri}, "
            f"S3 {rig.s3_endpoint}; shared {rig.shared}"
        )
        for n in rig.nodes:
            print(f"  {n.name} {n.ip} {n.resources}  shell: nsenter -t {n.init_pid} -n -m -p -u bash")
        return 0
    if verb == "down":
        down()
        return 0
    rig = load()
    print(json.dumps(asdict(rig), indent=1) if rig else f"rig {NAME}: down; leftovers: {leftovers()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
