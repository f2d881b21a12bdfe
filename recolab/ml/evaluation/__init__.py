"""Offline evaluation: numpy metrics, seeded splits, protocol runners (A, B, C), tiers."""
