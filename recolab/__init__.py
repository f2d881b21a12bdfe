"""RecoLab: movie recommendations from MovieLens files to a live endpoint."""

__version__ = "0.1.0"
