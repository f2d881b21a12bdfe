"""The serving runtime: cache, security, observability, the champion watcher."""
