"""A fake ComfyUI for tests, the demo and benchmarks: real HTTP and WebSocket, simulated work.

Built from observed behaviour only: the captures of a real ComfyUI 0.3.64 in
``tests/fixtures/comfyui/`` and the API notes in ``docs/comfyui-api.md``. Nodes do no real
work; time is simulated; outputs are tiny files. It runs aiohttp on its own event loop in a
daemon thread, so tests drive it from ordinary synchronous code::

    with FakeComfyUI(tmp_path) as comfy:                      # or version="0.38.0"
        httpx.post(f"{comfy.base_url}/prompt", json={"prompt": graph, "client_id": "c1"})
        comfy.wait_idle()

Standalone: ``python -m fakes.comfyui --port 8188 --root DIR [--version 0.38.0]``.

Generations
    ``version="0.3.64"`` (default) answers like the captures. ``"0.38.0"`` (or later) is
    the 2026 server: a client ``prompt_id`` must be a canonical lowercase UUID (else 400
    ``invalid_prompt_id``), the jobs API is served under ``/api/jobs``, unknown nodes are
    refused as ``missing_node_type``, newer-style combo inputs are checked, queued prompts
    carry ``extra_data.create_time`` and results stay cached across different prompts.

Controls (callable from the test thread)
    ``execution_time_s`` (simulated seconds per prompt, spread over the nodes that run),
    ``history_delay_s`` (the /history entry appears this long after ``execution_success``),
    ``websocket_enabled``, ``checkpoints``, ``upscale_models``, ``models_dir`` (a directory
    laid out like ComfyUI's models/: its files are listed by ``GET /models/{folder}`` and
    in /object_info's loader choices, beside ``checkpoints``/``upscale_models``), ``fail_node`` /
    ``clear_failures``, ``fail_requests``, ``delay_requests``, ``cut_requests``,
    ``hang_requests`` / ``release_hung``, ``clear_request_faults``, ``pause`` / ``resume``,
    ``drop_websockets``, ``restart``, ``stop_http`` / ``start_http``, ``wait_idle``;
    ``queue_remaining`` and ``websocket_count`` read the state.

Introspection (times are ``time.monotonic()``)
    ``submitted``, ``executed`` (prompts that ran at least one node), ``cached_runs``,
    ``interrupted``, ``deleted``, ``requests`` ((method, path) of every request),
    ``uploads``, ``free_calls`` (bodies of POST /free), ``received_times``,
    ``started_times``, ``finish_times``, ``node_times``.

Known differences from a real ComfyUI
    - Only the nodes in ``nodes.py`` exist, and /object_info lists the 0.3.64 keys only.
      Images are solid-colour PNGs of at most 512 px a side; ``FakeBigOutput`` files are
      generated while /view streams them and never exist on disk.
    - Nodes run depth-first (a node's inputs first, outputs in submission order); the real
      scheduler may interleave independent branches differently. Per-node messages match.
    - Validation reports the problems of every node upstream of a failing output, even
      behind a mismatched link; a link to a missing node is reported on the node holding
      it as ``exception_during_validation``; loops are not refused at validation but fail
      when run (``execution_error``).
    - Cache: 0.3.64 keeps only the previous prompt's results (its default, "classic");
      0.38 keeps everything (the real one evicts under memory pressure). Previews get a new
      random temp prefix on every run. ``POST /free`` with ``free_memory`` empties the cache
      before the next prompt starts; ``unload_models`` has nothing to unload.
    - An interrupt stops ``FakeSleep`` and ``FakeBigOutput`` at once and ``KSampler`` between
      steps; any other node finishes first and the prompt stops at the next node.
    - /view ignores ``preview`` and ``channel``, has no range requests and no
      ``name.png [output]`` form; a filename_prefix's ``%date%``-style placeholders are kept
      literally; no binary preview frames on the WebSocket; many routes are absent
      (/features, POST /history, /upload/mask, ...; in 0.38 the job listing and
      the batch cancel). A wrong request body may answer 500 where ComfyUI answers 400.
    - /system_stats is the captured CPU machine's; 0.38's extra keys have made-up values;
      0.38 ``executed`` outputs carry no asset metadata (as with the asset system off).
"""

from fakes.comfyui.app import FakeComfyUI
from fakes.comfyui.files import big_output_chunks, big_output_sha256
from fakes.comfyui.samples import FIXTURES_DIR, load_fixture

__all__ = ["FIXTURES_DIR", "FakeComfyUI", "big_output_chunks", "big_output_sha256", "load_fixture"]
