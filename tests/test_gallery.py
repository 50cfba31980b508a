import json
import re
from pathlib import Path

from conftest import run_cli


def test_gallery_writes_a_static_page_that_links_only_local_files(tmp_path):
    result = run_cli("gallery", "--sections", "invert", "--size", "32", "--iters", "2", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "index.html").read_text()
    assert "<script" not in html
    links = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert links and all(not link.startswith(("http:", "https:", "//")) for link in links)
    for link in links:
        assert (tmp_path / link).is_file(), link
    grid = json.loads((tmp_path / "invert_astronaut_grid.json").read_text())
    assert grid["kind"] == "grid" and len(grid["cells"][0]) == 13
    assert "invert_astronaut_grid_loss.png" in html


def test_gallery_site_only_and_unknown_section(tmp_path):
    result = run_cli("gallery", "--site-only", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "No invert figures yet" in (Path(tmp_path) / "index.html").read_text()
    result = run_cli("gallery", "--sections", "everything", "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: unknown section")
