"""One prompt end to end: submit, adopt, wait, download, store (``execution.Runner``).

Submission and adoption of an earlier attempt's prompt, the fence an attempt records
its prompt with, warm-up, and progress lines for ``main.py run``.

May import: ``workflow``, ``comfy``, ``outputs``, ``models`` and the top-level basics.
"""
