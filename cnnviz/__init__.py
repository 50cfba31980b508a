"""cnnviz: show what a convolutional network sees."""

__version__ = "0.1.0"
