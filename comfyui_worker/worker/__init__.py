"""The LittleHorse task worker: the task function and what keeps it alive.

The task function (``task``), every reliance on the SDK's internals (``sdk``), the
ledger of claimed tasks, the observed stub, the supervisor, the checkpoint fence,
the service (start, drain, stop), health and metrics, ``main.py check`` and
``main.py register``.

May import: ``workflow``, ``comfy``, ``lh``, ``outputs``, ``models``, ``run`` and the top-level
basics.
"""
