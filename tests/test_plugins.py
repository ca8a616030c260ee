import importlib.metadata

import pytest

from mmflow import StreamSpec, hookimpl
from mmflow import plugins as plugin_module
from mmflow.cli import main as cli_main
from mmflow.plugins import PluginError, build_registry


def test_toy_plugin_is_discovered_through_its_entry_point():
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="mmflow.plugins")}
    assert names.get("toy_gesture") == "mmflow_toy_gesture.plugin"
    registry = build_registry()
    assert registry.stream("gesture").frame_rate == 15 and registry.stream("signal").frame_rate == 50
    assert registry.owners[("streams", "gesture")] == "toy_gesture"
    assert registry.task("gesture_from_signal").given == ("signal",)
    assert callable(registry.demo("toy"))
    assert registry.backbone("dit").__name__ == "DiTBackbone"  # the core's own built-in, same hooks


def test_a_plugin_that_fails_to_import_is_named(monkeypatch):
    broken = importlib.metadata.EntryPoint("broken", "mmflow_no_such_module.plugin", "mmflow.plugins")
    monkeypatch.setattr(plugin_module, "_entry_points", lambda: [broken])
    with pytest.raises(PluginError, match="plugin 'broken'.*failed to load.*ModuleNotFoundError"):
        build_registry()


def test_duplicate_names_are_refused():
    class Twin:
        @hookimpl
        def mmflow_streams(self):
            return [StreamSpec("gesture", 30, 1)]

    twin = Twin()
    with pytest.raises(PluginError, match="registers stream 'gesture', already registered by 'toy_gesture'"):
        build_registry(extra_plugins={"twin": twin})


def test_bad_hook_signature_is_refused():
    class Bad:
        @hookimpl
        def mmflow_streams(self, unknown_argument):
            return []

    bad = Bad()
    with pytest.raises(PluginError, match="invalid hook implementation"):
        build_registry(extra_plugins={"bad": bad}, load_entry_points=False)


def test_unknown_names_point_at_the_fix():
    registry = build_registry(load_entry_points=False)
    with pytest.raises(PluginError, match="no backbone named 'f5tts_dit'.*install the plugin that provides it") as error:
        registry.backbone("f5tts_dit")
    with pytest.raises(PluginError, match="no mask preset named 'jam'") as preset_error:
        registry.mask_preset("jam")
    assert "audio" not in str(error.value) and "audio" not in str(preset_error.value)  # no unrelated plugin named


def test_cli_lists_plugins(capsys):
    assert cli_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "toy_gesture" in out and "mmflow-toy-gesture" in out and "gesture (toy_gesture)" in out
    assert cli_main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "gesture_from_signal" in out and "toy_gesture" in out
    # every task with its roles and its declared inputs; a long name does not run into the next column
    assert "glow_from_beat_and_pose  [tri_stream]" in out or "tri_stream" not in out
    assert "    signal: the signal stream, an array (frames, 1) at 50 frames/s" in out
    assert "tts  [jamflow]" in out and "absent: motion" in out and "    text: text to say" in out
    assert cli_main(["demo"]) == 0  # the list of demos, with the line that says what each does
    assert "toy  [toy_gesture]  ``mmflow demo toy``: train a two-stream MMDiT" in capsys.readouterr().out
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("mmflow 0.1.0 (plugins: ")
    assert cli_main(["demo", "no_such_demo"]) == 2
    assert "no demo named 'no_such_demo'" in capsys.readouterr().err
