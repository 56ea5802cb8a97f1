"""A sweep on a two-node Ray cluster whose lakehouse is in an S3 bucket (moto's server).

``ray.cluster_utils.Cluster`` starts a head node and a second node on this machine, each a raylet
of its own with one CPU and its own resource and environment; the sweep (``python -m engine -m
hydra/launcher=ray_cluster hydra.launcher.ray.init.address=HEAD``) joins it as a driver. Every job logs
the node it ran on (``QE_NODE``, set per raylet, read through Hydra's ``oc.env`` resolver in the
job's own process). The leaderboard must equal the sequential sweep's, and no Ray process of this
cluster may be left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import engine_cli, processes_mentioning

pytestmark = [
    pytest.mark.slow,
    # under pytest -n, on the worker of tests/test_launchers.py's Ray sweep: one Ray instance at a time
    pytest.mark.xdist_group("ray"),
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None
        or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None
        or importlib.util.find_spec("moto") is None,
        reason="needs hydra-ray-launcher and moto[server] (the test extra)",
    ),
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to check that no Ray process is left"),
]

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "qe-ray"
TINY = ["data.n_symbols=12", "data.end=2021-09-30", "ranking.top_n=3", "quiet=true"]
AXES = ["exit_rules.sl_stop=0.02,0.05", "exit_rules.tp_stop=0.1,0.3"]
NODE_LOGGING = [
    "hydra.job_logging.formatters.simple.format='node=${oc.env:QE_NODE,driver} pid=%(process)d %(name)s %(message)s'",
    "+hydra.callbacks.job_pid._target_=hydra.experimental.callbacks.LogJobReturnCallback",
    "+hydra.job_logging.loggers.hydra.level=INFO",
]
NODE_LINE = re.compile(r"^node=(\w+) pid=\d+ hydra\.experimental\.callbacks\.LogJobReturnCallback Succeeded", re.M)
TIMEOUT = 420


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    from tests.s3_server import s3_serving

    with s3_serving(BUCKET) as server:
        yield server


def _engine(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return engine_cli(args, cwd, TIMEOUT, env={"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", **env})


def _metrics(sweep: Path) -> dict[str, dict[str, object]]:
    out = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        params = json.loads((job / "params.json").read_text())
        out[json.dumps(params, sort_keys=True)] = json.loads((job / "metrics.json").read_text())
    return out


def test_sweep_on_a_two_node_ray_cluster_with_the_lakehouse_in_s3(s3: object, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    from engine.tasks.sweep import sweep_summarize

    env = s3.env()  # type: ignore[attr-defined]
    lakehouse = f"s3://{BUCKET}/lh"
    # the lakehouse first (one single run), then the sequential sweep: the reference leaderboard
    single = _engine([*TINY, f"paths.lakehouse_dir={lakehouse}", f"hydra.run.dir={tmp_path / 'single'}"], tmp_path, env)
    assert single.returncode == 0, single.stderr[-3000:]
    seq = tmp_path / "sequential"
    proc = _engine(["-m", *TINY, f"paths.lakehouse_dir={lakehouse}", *AXES, f"hydra.sweep.dir={seq}"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ray_tmp = Path(tempfile.mkdtemp(prefix="qe-rc-", dir="/tmp"))  # short: Ray's unix sockets live under it
    cluster = None
    leftovers: list[int] = []
    # the raylets (and so the jobs' workers) inherit the S3 settings; RAY_TMPDIR keeps even Ray's
    # "latest cluster" address file in this test's own directory (never /tmp/ray of this machine)
    env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}
    (ray_tmp / "ray").mkdir()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        common = {
            "num_cpus": 1,
            "temp_dir": str(ray_tmp / "ray"),
            "include_dashboard": False,
            "node_ip_address": "127.0.0.1",
        }
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={**common, "resources": {"head": 1}, "env_vars": {"QE_NODE": "head"}},
        )
        cluster.add_node(**{**common, "resources": {"second": 1}, "env_vars": {"QE_NODE": "second"}})
        cluster.wait_for_nodes()
        sweep = tmp_path / "ray"
        proc = _engine(
            [
                "-m",
                "hydra/launcher=ray_cluster",  # conf/hydra/launcher/ray_cluster.yaml: join, no object_store_memory
                f"hydra.launcher.ray.init.address={cluster.address}",
                *TINY,
                f"paths.lakehouse_dir={lakehouse}",
                *AXES,
                f"hydra.sweep.dir={sweep}",
                *NODE_LOGGING,
            ],
            tmp_path,
            # the cluster listens on loopback only; without this the driver rewrites 127.0.0.1 in the
            # address to this machine's outward IP (Ray's resolve_ip_for_localhost) and never connects
            {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        nodes = []
        for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
            logs = list(job.glob("*.log"))
            assert len(logs) == 1, logs
            nodes += NODE_LINE.findall(logs[0].read_text())
        assert len(nodes) == 4, nodes
        assert set(nodes) == {"head", "second"}, f"jobs ran on {nodes}"
    finally:
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        deadline = time.monotonic() + 30
        while (leftovers := processes_mentioning(str(ray_tmp))) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers:  # only processes of this test's own cluster
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not leftovers, f"Ray processes left running after the sweep: {leftovers}"
    assert _metrics(sweep) == _metrics(seq)
    a, b = sweep_summarize(seq), sweep_summarize(sweep)
    cols = ["rank", "job", "exit_rules.sl_stop", "exit_rules.tp_stop", "sharpe", "total_return", "n_trades"]
    assert a.leaderboard.select(cols).equals(b.leaderboard.select(cols))
