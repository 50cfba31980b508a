"""The analyzers, one page of its paper each: each builds its loss (or objective) on the core and runs the
one optimization engine, or attributes, or scans; they return data (``Output``, ``Patches``) and never draw."""
