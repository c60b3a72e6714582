"""GPU device isolation: a job cannot open the device files of GPUs not its own.

Why real agents and fake device files: what matters is what the job's own
process can open, so each job tries every "GPU" device file and writes which
opens succeeded; the files are character devices made with ``mknod`` in a
temporary folder, each a harmless existing device (zero, full, random,
urandom: never null, which every job needs). A devices cgroup (v1) judges a
device by its type and numbers, not by its path, so these stand for
``/dev/nvidiaN``. Jobs that must hold their GPUs at the same time wait for a
file the test creates once all of them wrote what they saw (readiness, never
a sleep).

The live tests need root (``mknod``, the devices cgroup) and a writable cgroup
v1 ``devices`` controller; they are skipped elsewhere, saying which is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from htcsim.agent.config import AgentConfig, AgentConfigError, gpu_device_files, load_agent_config
from htcsim.agent.engine.launch import deny_devices
from htcsim.agent.executors.base import LaunchSpec
from htcsim.agent.executors.local.shepherd import _still_allowed, detect_devices_cgroup
from tests.agent_harness import AgentProcess, running_agent, wait_for
from tests.test_agent_jobs import get, submit, wait_state

FAKE_GPUS = ((1, 5), (1, 7), (1, 8), (1, 9))
"""(major, minor) of the fake GPUs 0..3: /dev/zero, /dev/full, /dev/random, /dev/urandom."""


def _devices_base() -> tuple[Path | None, str]:
    if os.geteuid() != 0:
        return None, "not root"
    return detect_devices_cgroup()


_BASE, _WHY = _devices_base()
needs_devices_cgroup = pytest.mark.skipif(
    _BASE is None,
    reason=f"GPU device isolation needs root and a writable cgroup v1 devices controller: {_WHY}",
)

TRY_OPEN = """
import errno, json, os, sys
files, out, go = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
seen = {}
for path in files:
    got = []
    for how, flags in (("r", os.O_RDONLY), ("w", os.O_WRONLY)):
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            got.append(errno.errorcode.get(exc.errno, str(exc.errno)))
            continue
        if how == "r":
            os.read(fd, 1)
        os.close(fd)
        got.append("ok")
    seen[path] = got
with open(out + ".tmp", "w") as f:
    json.dump({"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "opens": seen}, f)
os.rename(out + ".tmp", out)
import time
while go and not os.path.exists(go):
    time.sleep(0.05)
"""
"""A job: tries to read and to write-open each file, writes what it got, waits for ``go``."""


@pytest.fixture
def fake_gpus(tmp_path: Path) -> Iterator[list[str]]:
    folder = tmp_path / "dev"
    folder.mkdir()
    paths = []
    for k, (major, minor) in enumerate(FAKE_GPUS):
        path = folder / f"gpu{k}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        paths.append(str(path))
    yield paths


def _job(client: httpx.Client, work: Path, files: list[str], gpus: int, go: str = "") -> int:
    script = work / "try_open.py"
    if not script.exists():
        script.write_text(TRY_OPEN)
    out = work / "opens-{id}.json"
    argv = [sys.executable, str(script), ",".join(files), str(out), go]
    return submit(client, work, argv, gpus=gpus, walltime_s=300)


def _opens(work: Path, job: int) -> dict:
    path = work / f"opens-{job}.json"
    wait_for(path.exists)
    result: dict = json.loads(path.read_text())
    return result


def _devices_root(agent: AgentProcess) -> Path:
    """The agent's shepherd's devices cgroup folder (its jobs' are in it)."""
    assert _BASE is not None
    run_dir = (agent.state_dir / "run").resolve()
    return _BASE / f"htcsim-{hashlib.sha1(str(run_dir).encode()).hexdigest()[:16]}"


def _job_cgroups(agent: AgentProcess) -> list[Path]:
    return sorted(_devices_root(agent).glob("job-*"))


# ------------------------------------------------------------------ settings


def test_gpu_device_files_are_checked_naming_the_key(tmp_path: Path) -> None:
    ok = AgentConfig(gpu_devices=[0, 1], gpu_device_files={"0": "/dev/nvidia0", "1": "/x/y"})
    ok.check()
    assert gpu_device_files(ok, [0, 1]) == {0: "/dev/nvidia0", 1: "/x/y"}
    listed = AgentConfig(nodes=2, gpu_devices=[[4], [6]], gpu_device_files=["/d/a", "/d/b"])
    listed.check()
    assert gpu_device_files(listed, [4, 6]) == {4: "/d/a", 6: "/d/b"}
    AgentConfig(gpus_per_node=2, gpu_device_files={"1": "/d/b"}).check()
    bad: list[AgentConfig] = [
        AgentConfig(gpu_devices=[0, 1], gpu_device_files={"gpu0": "/dev/nvidia0"}),
        AgentConfig(gpu_devices=[0, 1], gpu_device_files={"7": "/dev/nvidia7"}),
        AgentConfig(gpu_devices=[0, 1], gpu_device_files={"0": "dev/nvidia0"}),
        AgentConfig(gpu_devices=[0, 1], gpu_device_files={"0": "/d/a", "1": "/d/a"}),
        AgentConfig(gpu_devices=[0, 1], gpu_device_files=["/d/a"]),
        AgentConfig(gpus_per_node=2, gpu_device_files=["/d/a", "/d/b"]),
        AgentConfig(gpu_device_files="/dev/nvidia0"),  # type: ignore[arg-type]
    ]
    for config in bad:
        with pytest.raises(AgentConfigError, match="gpu_device_files"):
            config.check()
    # from a file: a table, and a wrong kind naming the key and the file
    path = tmp_path / "agent.toml"
    path.write_text('gpu_devices = [0, 1]\n[gpu_device_files]\n0 = "/d/a"\n1 = "/d/b"\n')
    assert load_agent_config(path).gpu_device_files == {"0": "/d/a", "1": "/d/b"}
    path.write_text('gpu_devices = [0, 1]\ngpu_device_files = "/dev/nvidia0"\n')
    with pytest.raises(AgentConfigError, match=f"{path}: gpu_device_files must be a table"):
        load_agent_config(path)
    # the default: /dev/nvidia<id> for each id whose file exists
    present = [i for i in range(4) if os.path.exists(f"/dev/nvidia{i}")]
    assert gpu_device_files(AgentConfig(), range(4)) == {i: f"/dev/nvidia{i}" for i in present}


def test_the_engine_denies_the_other_gpus_devices_and_skips_missing_files(
    tmp_path: Path,
) -> None:
    files = {0: "/dev/zero", 1: "/dev/full", 2: str(tmp_path / "missing"), 3: str(tmp_path)}
    assert deny_devices(files, [0]) == (("c", 1, 7),)
    assert deny_devices(files, [1]) == (("c", 1, 5),)
    assert deny_devices(files, []) == (("c", 1, 5), ("c", 1, 7))
    assert deny_devices({0: "/dev/zero", 1: "/dev/zero"}, [0]) == ()  # never its own device
    assert deny_devices({}, []) == ()
    spec = LaunchSpec(1, ["true"], "/", {}, "/o", "/e", deny_devices=(("c", 195, 1),))
    assert spec.payload()["deny_devices"] == [["c", 195, 1]]
    assert "deny_devices" not in LaunchSpec(1, ["true"], "/", {}, "/o", "/e").payload()


def test_the_devices_controller_is_found_or_isolation_is_off_saying_why(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/\n")
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n")
    base, why = detect_devices_cgroup(cgroup, mounts)
    assert base is None
    assert "no cgroup v1 devices controller" in why and "BPF_PROG_TYPE_CGROUP_DEVICE" in why
    root = tmp_path / "devices"
    (root / "some" / "group").mkdir(parents=True)
    mounts.write_text(f"cgroup {root} cgroup rw,nosuid,devices 0 0\n")
    cgroup.write_text("5:devices:/some/group\n0::/\n")
    base, why = detect_devices_cgroup(cgroup, mounts)
    assert base is None and "no devices.deny under" in why  # a plain folder, not a cgroup
    cgroup.write_text("0::/\n")
    assert "has no devices entry" in detect_devices_cgroup(cgroup, mounts)[1]


def test_a_deny_hidden_by_a_wider_allow_rule_is_seen() -> None:
    assert not _still_allowed("a *:* rwm\n", "c", 195, 1)  # default allow: its denies hold
    assert _still_allowed("c 195:* rwm\nc 1:3 rwm\n", "c", 195, 1)
    assert _still_allowed("a *:* rwm\nc 195:1 rwm\n", "c", 195, 1)
    assert not _still_allowed("c 195:0 rwm\nb 195:1 rwm\n", "c", 195, 1)


# ------------------------------------------------------------------ live


@needs_devices_cgroup
def test_each_job_opens_only_its_own_gpus_device(tmp_path: Path, fake_gpus: list[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(
            tmp_path,
            nodes=1,
            cores_per_node=6,
            gpu_devices=[0, 1, 2, 3],
            gpu_device_files=fake_gpus,
            kill_grace_s=1,
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: "GPU device isolation: devices cgroup v1 at" in agent.log.read_text())
        assert client.get("/cluster").json()["gpu_isolation"] == "devices-cgroup-v1"
        go = str(work / "go")
        four = [_job(client, work, fake_gpus, 1, go) for _ in range(4)]
        none = _job(client, work, fake_gpus, 0, go)
        seen = {job: _opens(work, job) for job in [*four, none]}  # all five run at once
        assert len(_job_cgroups(agent)) == 5  # a devices cgroup each, while they run
        for job in four:
            (gpu,) = get(client, job)["gpu_ids"]
            assert seen[job]["gpus"] == str(gpu)
            for k, path in enumerate(fake_gpus):
                want = ["ok", "ok"] if k == gpu else ["EPERM", "EPERM"]
                assert seen[job]["opens"][path] == want, (job, gpu, path)
        assert sorted(int(seen[job]["gpus"]) for job in four) == [0, 1, 2, 3]
        assert seen[none]["gpus"] == ""
        assert all(got == ["EPERM", "EPERM"] for got in seen[none]["opens"].values())
        Path(go).touch()
        for job in [*four, none]:
            assert wait_state(client, job)["state"] == "completed"
        wait_for(lambda: not _devices_root(agent).exists())  # removed once empty


@needs_devices_cgroup
def test_without_device_files_a_job_is_unaffected_and_isolation_is_said_off(
    tmp_path: Path, fake_gpus: list[str]
) -> None:
    if any(os.path.exists(f"/dev/nvidia{i}") for i in range(8)):
        pytest.skip("this machine has /dev/nvidia* files: they would be the defaults")
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(tmp_path, nodes=1, cores_per_node=2, kill_grace_s=1) as agent,
        agent.client() as client,
    ):
        wait_for(
            lambda: "GPU device isolation: off: no GPU device files known" in agent.log.read_text()
        )
        assert client.get("/cluster").json()["gpu_isolation"] == "off"
        job = _job(client, work, fake_gpus, 0)
        assert wait_state(client, job)["state"] == "completed"
        seen = _opens(work, job)
        assert all(got == ["ok", "ok"] for got in seen["opens"].values())


def test_the_agent_says_at_start_whether_gpu_devices_are_isolated(tmp_path: Path) -> None:
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent:
        text = wait_for(lambda: "GPU device isolation: " in (t := agent.log.read_text()) and t)
        line = next(x for x in text.splitlines() if "GPU device isolation: " in x)
        note = line.split("GPU device isolation: ", 1)[1]
        assert note.startswith(("devices cgroup v1 at", "off: "))
        if _BASE is None:
            assert note.startswith("off: ")
        with agent.client() as client:
            assert client.get("/cluster").json()["gpu_isolation"] in ("devices-cgroup-v1", "off")
