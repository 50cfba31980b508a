"""The microscope: every unit of a network over a whole image set, as tables and a browsable site, on one
machine or a Ray cluster (``run.microscope``)."""
