"""Outputs: collecting what a prompt made, downloading it and storing it.

The output list and journal (``collect``), the store (a directory or S3:
``store``, ``filesink``, ``objstore``), the download (``download``) and saving
outputs while the prompt still runs (``early``).

May import: ``comfy`` (the client downloads), ``workflow`` through it, the top-level basics.
"""
