"""Comparable grids (one grid module) and the static HTML gallery."""
