"""The analyzers: each builds its objective and calls the core and the one optimization loop."""
