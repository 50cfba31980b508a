"""The microscope's static site, from its manifest and tables: an index, a page per layer (every unit's
feature visualization beside its top patch, lazy-loaded; by unit number and by mean activation) and a page
per unit. Like the gallery (whose style it shares) it opens from the file system: relative links, inline CSS
and SVG, no scripts, nothing external; every page names the command that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from cnnviz import __version__
from cnnviz.core.files import atomic_write
from cnnviz.errors import CnnvizError
from cnnviz.microscope import store

HIST_WIDTH, HIST_HEIGHT = 300, 80


def _environment() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.PackageLoader("cnnviz.microscope", "templates"),
                                  jinja2.PackageLoader("cnnviz.gallery", "templates")])
    return jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html", "j2"]))


def _write(path: Path, html: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(html))


def _bars(counts: list[int], edges: list[float]) -> list[dict[str, Any]]:
    """The histogram's bars in SVG coordinates."""
    tallest = max(max(counts), 1)
    width = HIST_WIDTH / len(counts)
    return [{"x": round(i * width, 1), "width": round(width - 1, 1), "height": round(HIST_HEIGHT * c / tallest, 1),
             "y": round(HIST_HEIGHT * (1 - c / tallest), 1), "count": c, "low": f"{edges[i]:.3g}"} for i, c in enumerate(counts)]


def _layer_units(out: Path, layer: str) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """A layer's unit rows (with their picture names) and its examples by unit."""
    folder = out / layer
    examples: dict[int, list[dict[str, Any]]] = {}
    for row in store.read_table(folder / "examples.parquet"):
        row["patch"] = store.picture(row["unit"], "p", row["rank"])
        guided = store.picture(row["unit"], "g", row["rank"])
        row["guided"] = guided if (folder / "img" / guided).is_file() else None
        row["name"] = Path(row["image"]).name
        examples.setdefault(row["unit"], []).append(row)
    units = store.read_table(folder / "units.parquet")
    for u in units:
        u["fvs"] = [store.picture(u["unit"], "fv", k) for k in range(len(u["fv_score"]))]
        u["fv"] = u["fvs"][0] if u["fvs"] else None
        u["patch"] = examples[u["unit"]][0]["patch"] if examples.get(u["unit"]) else None
    return units, examples


def build_site(out: str | Path) -> Path:
    """Write every page of the microscope in ``out``; returns its index.html."""
    out = Path(out)
    manifest = store.read_manifest(out)
    if manifest is None or not manifest.get("finished"):
        raise CnnvizError(f"{out} holds no finished microscope run")
    env = _environment()
    params = manifest["params"]
    common = {"command": manifest["command"], "version": manifest["version"] or __version__}
    layer_list = []
    for layer in params["layers"]:
        units, examples = _layer_units(out, layer)
        _layer_pages(env, out, layer, units, examples, common)
        layer_list.append({"name": layer, "folder": layer, "count": len(units), "first": units[0] if units else None})
    html = env.get_template("index.html.j2").render(
        title=params["model"], crumbs=[], model=params["model"], weights=params["weights"], layers=params["layers"],
        layer_list=layer_list, images=manifest["images"], sources=params["images"], sizes=params["sizes"],
        skipped=manifest["skipped"], units_spec=params["units"], total_units=sum(item["count"] for item in layer_list),
        seconds=manifest["seconds"], **common)
    return _write(out / "index.html", html)


def _layer_pages(env: jinja2.Environment, out: Path, layer: str, units: list[dict[str, Any]],
                 examples: dict[int, list[dict[str, Any]]], common: dict[str, Any]) -> None:
    crumbs = [("microscope", "../index.html")]
    template = env.get_template("layer.html.j2")
    _write(out / layer / "index.html", template.render(title=layer, crumbs=crumbs, layer=layer, units=units, by_mean=False, **common))
    ranked = sorted(units, key=lambda u: -u["mean"])
    _write(out / layer / "by_mean.html", template.render(title=layer, crumbs=crumbs, layer=layer, units=ranked, by_mean=True, **common))
    page = env.get_template("unit.html.j2")
    crumbs = [*crumbs, (layer, "index.html")]
    for i, u in enumerate(units):
        html = page.render(title=f"unit {u['unit']}", crumbs=crumbs, layer=layer, u=u, examples=examples.get(u["unit"], []),
                           bars=_bars(u["histogram"], u["edges"]), classes=list(zip(u["classes"], u["class_weights"])),
                           previous=units[i - 1]["unit"] if i else None,
                           next=units[i + 1]["unit"] if i + 1 < len(units) else None, **common)
        _write(out / layer / f"unit_{u['unit']}.html", html)
