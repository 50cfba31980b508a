import json
import signal
import subprocess
import sys
import time

from PIL import Image

from cnnviz.figures import CELL_INCHES, DPI

from conftest import run_cli

SIDECAR_FIELDS = {"analyzer", "model", "weights", "weights_sha256", "layers", "params", "seed", "iterations",
                  "losses", "seconds", "interrupted", "cnnviz_version"}


def test_invert_writes_png_and_sidecar(tmp_path):
    result = run_cli("invert", "coffee", "--layer", "relu2_1", "--size", "48", "--iters", "5", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    png = tmp_path / "invert_coffee_relu2_1.png"
    assert Image.open(png).size == (48, 32)
    record = json.loads(png.with_suffix(".json").read_text())
    assert SIDECAR_FIELDS <= set(record)
    assert record["analyzer"] == "invert" and record["layers"] == ["relu2_1"]
    assert record["interrupted"] is False and record["iterations"] == 5
    assert record["params"]["line_search"] == "backtracking" and len(record["history"]) == 6  # one evaluation per iteration
    assert record["params"]["tv_weight"] > 0 and 0 < record["params"]["relative_error"] < 1
    assert record["losses"]["feature"] < record["history"][0]["feature"]


def test_lbfgs_without_line_search_takes_one_evaluation_per_iteration_and_a_bad_choice_fails_cleanly(tmp_path):
    result = run_cli("invert", "coffee", "--layer", "relu2_1", "--size", "48", "--iters", "8", "--line-search", "none", "--scales", "none",
                     "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "invert_coffee_relu2_1.json").read_text())
    assert record["params"]["line_search"] is None and record["iterations"] == 8 and len(record["history"]) == 9
    assert record["losses"]["feature"] < 0.9 * record["history"][0]["feature"]
    bad = run_cli("invert", "--line-search", "armijo", "--size", "32", "--iters", "1", "--out", str(tmp_path / "bad"))
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "--line-search 'armijo'" in lines[0]
    assert not (tmp_path / "bad").exists()  # the folder it made for its outputs is taken back


def test_invert_layers_writes_one_grid_cell_per_layer(tmp_path):
    result = run_cli("invert", "--layers", "relu1_1,relu3_1,relu5_1", "--size", "32", "--iters", "2",
                     "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    for layer in ("relu1_1", "relu3_1", "relu5_1"):
        assert (tmp_path / f"invert_astronaut_{layer}.json").is_file()
    width, _ = Image.open(tmp_path / "invert_astronaut_grid.png").size
    assert width == round(3 * CELL_INCHES * DPI)


def _terminal_ctrl_c() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A suite started in the background (``cmd &``) hands its
    children SIGINT ignored, and Python then installs no KeyboardInterrupt handler at start-up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_saves_the_latest_image_marked_interrupted(tmp_path):
    png = tmp_path / "invert_astronaut_relu3_1.png"
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnviz", "invert", "--layer", "relu3_1", "--size", "64", "--iters", "100000",
         "--optimizer", "adam", "--save-every", "1", "--out", str(tmp_path), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_terminal_ctrl_c,
    )
    deadline = time.time() + 120
    while not png.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert png.exists(), "the run never started"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["interrupted"] is True and 0 < record["iterations"] < 100000
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([png.name, png.with_suffix(".json").name])


def test_ctrl_c_during_start_up_ends_quietly(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "cnnviz", "invert", "--size", "32", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_terminal_ctrl_c)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted")

