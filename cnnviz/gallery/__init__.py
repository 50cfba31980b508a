"""The gallery: its plan (figures, presets, ascent rows, transfer sweeps), its prose, its time estimate,
the static site and the lean copy for a repository."""
