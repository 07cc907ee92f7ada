"""The task input, before anything reaches ComfyUI.

Parsing and JSON safety, the graph and its placeholders, params and overrides,
templates, input images and URL fetching, the pre-flight check against ComfyUI's
node list, and the prepared request (``request.TaskPreparer``).

May import: the top-level basics (``errors``, ``settings``, ``bounds``, ``transport``).
"""
