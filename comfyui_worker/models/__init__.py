"""Models on demand: the model files a task declares, made present in ComfyUI's models dir.

``sources`` (https behind the SSRF guard, S3 through the outputs' client), ``ledger``
(which files this worker downloaded, least recently used first), ``files`` (locks,
downloads that are never half, eviction, free space) and ``ensure`` (ask ComfyUI,
download what it lacks, hold it for the run). The declarations themselves are parsed
with the task input (``workflow/modeldecl``).

May import: ``workflow``, ``comfy``, ``outputs``, the top-level basics.
"""
