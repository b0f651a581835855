"""End-to-end tests: the main job on simulated MegaCam raws and on the real data."""
