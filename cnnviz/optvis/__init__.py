"""Feature visualization, laid out as Lucid's ``optvis``: what to maximise (``objectives``), how the image
is parameterised (``param``, ``color``), the random transforms before each step (``transforms``) and the
image regularizers (``regularizers``)."""
