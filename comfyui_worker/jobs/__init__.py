"""The job side: jobs (WfRuns) as users submit, list, follow, retry and cancel them.

The model, reading a WfRun into a job, following one, the task input built from
command-line arguments, reading outputs back, text for the terminal, the arguments
and the commands.

May import: ``workflow``, ``lh``, ``outputs`` and the top-level basics; never the
worker engine (``run``, ``worker``, ``comfy``'s WebSocket).
"""
