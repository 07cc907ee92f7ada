"""Benchmarks: what the worker adds on top of ComfyUI."""
