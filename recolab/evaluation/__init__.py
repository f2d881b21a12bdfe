"""Offline evaluation: numpy metrics, seeded splits and protocol runners (A, B, C)."""
