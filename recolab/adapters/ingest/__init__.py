"""MovieLens in: the release readers, download, the demo generator, Great Expectations."""
