"""The Ray engine writes the tables the local engine writes: on a local Ray with 2 CPUs (through the CLI) and on a
two-node cluster simulated on this machine. Each Ray run is a subprocess with a time limit, so a pipeline that
hangs fails the test instead of the suite. Without Ray installed, ``--engine ray`` says how to get it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from test_microscope import FAST, LAYER, generated_set, tables

from cnnviz.microscope import run as runner
from cnnviz.microscope import store

from conftest import run_cli

pytest.importorskip("ray", reason="the Ray engine's tests need pip install -e '.[test]' (it holds cnnviz[ray])")
LIMIT = 300


@pytest.fixture(scope="module")
def local_run(vgg, tmp_path_factory):
    images = generated_set(tmp_path_factory.mktemp("set"), count=24)
    out = tmp_path_factory.mktemp("local")
    runner.microscope(vgg, [images], out=out, **FAST)
    return images, out


def same_tables(ours, theirs):
    examples, units = tables(ours)
    other_examples, other_units = tables(theirs)
    assert examples == other_examples and len(examples) > 6
    for a, b in zip(units, other_units):
        assert a["unit"] == b["unit"] and a["images"] == b["images"] == 24
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-3, abs=1e-4)


def test_a_local_ray_with_two_cpus_writes_the_same_tables(local_run, tmp_path):
    images, ours = local_run
    out = tmp_path / "ray"
    result = run_cli("microscope", "--images", str(images), "--layers", LAYER, "--units", FAST["units"], "--top",
                     str(FAST["top"]), "--sizes", ",".join(map(str, FAST["sizes"])), "--batch", str(FAST["batch"]),
                     "--no-guided", "--fv-size", str(FAST["fv_size"]), "--fv-iters", str(FAST["fv_iters"]), "--engine", "ray",
                     "--workers", "2", "--device", "cpu", "--out", str(out), "--quiet", timeout=LIMIT)
    assert result.returncode == 0, result.stderr
    same_tables(ours, out)
    assert store.read_manifest(out)["command"].startswith("cnnviz microscope --images")


SCRIPT = """
import sys
import ray
from ray.cluster_utils import Cluster
from cnnviz.core.hooked import load_model
from cnnviz.microscope.run import microscope

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
try:
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    microscope(load_model("vgg16", device="cpu"), [sys.argv[1]], out=sys.argv[2], engine="ray", workers=2, **FAST)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_two_node_cluster_writes_the_same_tables(local_run, tmp_path):
    images, ours = local_run
    script = f"FAST = {FAST!r}\n" + textwrap.dedent(SCRIPT)
    result = subprocess.run([sys.executable, "-c", script, str(images), str(tmp_path)], capture_output=True, text=True,
                            timeout=LIMIT)
    assert result.returncode == 0, result.stderr[-3000:]
    same_tables(ours, tmp_path)


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = run_cli("microscope", "--images", "coffee", "--sizes", "32", "--engine", "ray", "--device", "cpu",
                     "--out", str(tmp_path / "out"), env=env, timeout=LIMIT)
    assert result.returncode == 2 and result.stderr.splitlines() == ["error: --engine ray needs Ray: pip install 'cnnviz[ray]'"]
    assert not (tmp_path / "out").exists()
