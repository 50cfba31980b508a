"""The cnnviz command line (Typer + Rich); installed as ``cnnviz.cli``."""
