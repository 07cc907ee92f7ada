"""ComfyUI's API: the HTTP client, its WebSocket events and waiting for a prompt.

May import: ``workflow`` (the graph, to know its output nodes) and the top-level basics.
"""
