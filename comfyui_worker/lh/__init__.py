"""LittleHorse terms the worker and the job side share.

The API client (``api``) with the one mapping of gRPC errors (``rpc``), the
``comfyui-generate`` WfSpec (``wfspec``) and the names of priority lanes (``lanes``).
Nothing here loads the SDK's task worker.

May import: the top-level basics only.
"""
