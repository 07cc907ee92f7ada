"""comfyui-worker: a LittleHorse task worker that runs ComfyUI workflows."""

__version__ = "0.1.0"
