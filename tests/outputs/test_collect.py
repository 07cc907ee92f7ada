"""Output collection and safe, unique destinations."""

from __future__ import annotations

import pytest

from comfyui_worker.errors import OutputRejectedError
from comfyui_worker.outputs.collect import JOURNAL, MANIFEST, OutputRef, collect, plan, relative_key

MULTI = {
    "3": {"images": [{"filename": "ComfyUI_temp_a_00001_.png", "subfolder": "", "type": "temp"}]},
    "2": {"images": [{"filename": "still_00001_.png", "subfolder": "sample", "type": "output"}]},
    "5": {
        "images": [{"filename": "anim_00001_.webp", "subfolder": "", "type": "output"}],
        "animated": [True],
    },
    "6": {"latents": [{"filename": "l_00001_.latent", "subfolder": "lat", "type": "output"}]},
    "7": {"text": ["hello", "world"]},
    "8": {
        "gifs": [
            {
                "filename": "v_00001.mp4",
                "subfolder": "",
                "type": "output",
                "format": "video/h264-mp4",
            }
        ]
    },
}


def ref(filename: str = "a.png", subfolder: str = "", comfy_type: str = "output") -> OutputRef:
    return OutputRef(
        node_id="9", key="images", filename=filename, subfolder=subfolder, comfy_type=comfy_type
    )


def test_collect_finds_files_under_every_key_and_skips_temp():
    """images, latents, gifs are files; temp previews are skipped by default; text is kept."""
    got = collect(MULTI, include_temp=False)
    assert sorted((f.node_id, f.key, f.filename) for f in got.files) == [
        ("2", "images", "still_00001_.png"),
        ("5", "images", "anim_00001_.webp"),
        ("6", "latents", "l_00001_.latent"),
        ("8", "gifs", "v_00001.mp4"),
    ]
    assert got.skipped_temp == 1
    assert got.text == {"7": ["hello", "world"]}
    assert got.values == {"5": {"animated": [True]}}


def test_collect_includes_temp_when_configured():
    """With include_temp the preview is a file too."""
    got = collect(MULTI, include_temp=True)
    assert any(f.comfy_type == "temp" for f in got.files) and got.skipped_temp == 0


@pytest.mark.parametrize(
    "outputs",
    [None, [], "x", {"1": "not an object"}, {"1": None}, {"1": {"images": [{"filename": 3}]}}],
)
def test_collect_tolerates_any_shape(outputs: object):
    """A history node output that is not an object becomes a value, never an exception."""
    got = collect(outputs, include_temp=False)
    assert got.files == []


def test_collect_keeps_odd_node_outputs_as_values():
    """A custom node's non-object output is kept under its node id."""
    assert collect({"4": [1, 2]}, include_temp=False).values == {"4": {"value": [1, 2]}}


def test_relative_key_keeps_subfolders_and_separates_temp():
    """Outputs keep their subfolder; non-output types get their own top folder."""
    assert relative_key(ref("x.png", "a/b")) == "a/b/x.png"
    assert relative_key(ref("x.png", "", "temp")) == "temp/x.png"


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [
        ("../x.png", ""),
        ("x.png", "../up"),
        ("x.png", "/etc"),
        ("/etc/passwd", ""),
        ("..", ""),
        ("a\\..\\b", ""),
        ("", ""),
        ("x.png", "a/../../b"),
        ("C:x", ""),
        ("x\ud800.png", ""),
        ("n" * 300 + ".png", ""),
    ],
)
def test_relative_key_rejects_escapes_and_unusable_names(filename: str, subfolder: str):
    """Absolute paths, `..`, separators, broken text and over-long names are rejected."""
    with pytest.raises(OutputRejectedError, match="output of node 9"):
        relative_key(ref(filename, subfolder))


def test_plan_keeps_two_files_that_map_to_one_name():
    """A temp preview and an output subfolder called temp both keep their bytes."""
    preview, lookalike = ref("x.png", "", "temp"), ref("x.png", "temp")
    assert [key for _, key in plan([preview, lookalike])] == ["temp/x.png", "temp/x-2.png"]


def test_plan_never_overwrites_the_manifest():
    """An output named manifest.json is renamed, so the set's manifest stays ours."""
    assert plan([ref(MANIFEST)]) == [(ref(MANIFEST), "manifest-2.json")]


@pytest.mark.parametrize("folder", [MANIFEST, JOURNAL, f"{JOURNAL}/deeper"])
def test_a_folder_named_like_the_workers_own_files_is_rejected(folder: str):
    """A subfolder called manifest.json or the journal could not coexist with them: rejected."""
    with pytest.raises(OutputRejectedError, match="keeps for itself"):
        plan([ref("a.png", subfolder=folder)])


def test_plan_gives_the_same_file_one_key():
    """Two nodes pointing at the same ComfyUI file share one saved copy."""
    first = ref("same.png")
    second = OutputRef("10", "images", "same.png", "", "output")
    assert [key for _, key in plan([first, second])] == ["same.png", "same.png"]
