"""``mmflow app`` on a third-party model: a three-stream model trained in the test (``examples/tri_stream``) gets one
tab per task, built from the tasks' declared inputs, and runs its tasks through the app's own HTTP API, with bad
inputs answered by the pipeline's message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio", reason="install the app extra: pip install -e '.[app]' (scripts/setup.sh does)")
tri = pytest.importorskip("mmflow_tri_stream.plugin", reason="install examples/tri_stream (scripts/setup.sh does)")

from mmflow.app import AppWidgets, build_app, parse_spans, widgets_for  # noqa: E402
from mmflow.cli import main as mmflow_main  # noqa: E402
from mmflow.codecs import InputError  # noqa: E402
from mmflow.pipeline import MMFlowPipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tri_stream_pipeline):
    return MMFlowPipeline.from_pretrained(tri_stream_pipeline)


@pytest.fixture(scope="module")
def client(pipe):
    from gradio_client import Client

    demo = build_app(pipe, default_steps=2)
    demo.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
    finally:
        demo.close()


def _tabs(demo) -> list[str]:
    return [block.label for block in demo.blocks.values() if type(block).__name__ == "Tab"]


def _labels(demo) -> set[str]:
    return {getattr(block, "label", None) for block in demo.blocks.values()} - {None}


def test_a_third_party_model_gets_a_tab_per_task_with_its_declared_inputs(client):
    demo, _ = client
    assert sorted(_tabs(demo)) == ["glow_from_beat_and_pose", "pose_from_beat", "tri_edit", "tri_joint"]
    assert _tabs(demo)[0] == "tri_joint"  # the task generating every stream comes first
    labels = _labels(demo)
    assert "beat: the beat stream, an array (frames, 2) at 40 frames/s" in labels  # the codec's declaration
    assert {f"guidance scale (CFG) of {n}" for n in ("beat", "pose", "glow")} <= labels  # one CFG per stream


def test_the_app_runs_a_task_and_returns_the_saved_files(client, tmp_path):
    from gradio_client import handle_file
    from mmflow_tri_stream.data import clip

    _, api = client
    beat = clip(1.0, np.random.default_rng(0))["beat"]
    np.save(tmp_path / "beat.npy", beat)
    # inputs, then steps, sway, one CFG per present stream (beat, pose), seed, joint attention, duration, spans
    files = api.predict(handle_file(str(tmp_path / "beat.npy")), 2, -1.0, 0.0, 0.0, 3, True, None, "",
                        api_name="/pose_from_beat")
    names = sorted(f["path"].rsplit("/", 1)[-1] for f in files)
    assert names == ["sample.beat.npy", "sample.pose.npy"]
    assert api.predict(2, -1, 0, 0, 0, 0, True, 1.5, "", api_name="/tri_joint")  # a duration is all it needs


def test_the_advanced_settings_reach_the_pipeline(client, pipe, tmp_path):
    """Each setting changes the result as the same call of the pipeline does (the app adds nothing)."""
    from gradio_client import handle_file
    from mmflow_tri_stream.data import clip

    _, api = client
    beat = clip(1.0, np.random.default_rng(1))["beat"]
    np.save(tmp_path / "beat.npy", beat)

    def app_pose(steps=2, sway=-1.0, cfg=(0.0, 0.0), seed=3, joint=True):
        files = api.predict(handle_file(str(tmp_path / "beat.npy")), steps, sway, *cfg, seed, joint, None, "",
                            api_name="/pose_from_beat")
        return np.load(next(f["path"] for f in files if f["path"].endswith("sample.pose.npy")))

    def pipe_pose(steps=2, sway=-1.0, cfg=(0.0, 0.0), seed=3, joint=True):
        out = pipe("pose_from_beat", beat=beat, num_inference_steps=steps, sway_coefficient=sway,
                   guidance_scale=dict(zip(("beat", "pose"), cfg, strict=True)), seed=seed, joint_attention=joint,
                   progress=False)
        return out.outputs[0]["pose"]

    base = app_pose()
    np.testing.assert_allclose(base, pipe_pose(), atol=1e-6)
    for change in ({"steps": 3}, {"sway": 0.5}, {"cfg": (0.0, 2.0)}, {"seed": 4}, {"joint": False}):
        changed = app_pose(**change)
        assert not np.allclose(changed, base), change
        np.testing.assert_allclose(changed, pipe_pose(**change), atol=1e-6, err_msg=str(change))


def test_bad_inputs_come_back_as_the_pipelines_message(client):
    from gradio_client.exceptions import AppError

    _, api = client
    with pytest.raises(AppError, match=r"needs beat= \(the beat stream"):
        api.predict(None, 2, -1, 0.0, 0.0, 0, True, None, "", api_name="/pose_from_beat")
    with pytest.raises(AppError, match="cannot tell how long"):
        api.predict(2, -1, 0, 0, 0, 0, True, None, "", api_name="/tri_joint")
    with pytest.raises(AppError, match="--span takes STREAM:START:END"):
        api.predict(None, None, None, 2, -1, 0, 0, 0, 0, True, None, "beat:0.2", api_name="/tri_edit")


def test_spans_text_and_widget_lookup():
    assert parse_spans(" audio:1.0:1.6, motion:0.5:1; audio:2:2.5 ") == {"audio": [(1.0, 1.6), (2.0, 2.5)],
                                                                         "motion": [(0.5, 1.0)]}
    assert parse_spans("  ") is None
    with pytest.raises(InputError, match="spans: --span takes"):
        parse_spans("audio:1")
    assert type(widgets_for(MMFlowPipeline)) is AppWidgets


def test_mmflow_app_is_a_command(capsys):
    with pytest.raises(SystemExit):
        mmflow_main(["app", "--help"])
    out = capsys.readouterr().out
    assert "--share" in out and "127.0.0.1" in out


def test_the_mouth_plot_follows_the_speech_envelope_per_video_frame():
    pytest.importorskip("mmflow_jamflow", reason="install plugins/jamflow (scripts/setup.sh does)")
    from mmflow_jamflow.app_widgets import mouth_and_envelope
    from mmflow_motion_liveportrait.render import expression_for_opening

    rate, fps = 24_000, 25.0
    audio = np.zeros(rate, np.float32)  # 1 s: silence, then a tone at a quarter of full scale, then full scale
    audio[rate // 2:] = 0.25 * np.sin(np.arange(rate // 2) * 0.3)
    audio[3 * rate // 4:] *= 4
    opening = np.linspace(0, 1, 25)
    curves = mouth_and_envelope(audio, expression_for_opening(opening), rate, fps)
    np.testing.assert_allclose(curves["time"], np.arange(25) / fps)
    np.testing.assert_allclose(curves["mouth opening"], opening, atol=1e-6)
    envelope = curves["speech envelope"]
    assert envelope.shape == (25,) and np.all(envelope[:12] == 0) and envelope.max() == 1
    np.testing.assert_allclose(envelope[13:18], 0.25, atol=0.01)
    np.testing.assert_allclose(envelope[19:], 1.0, atol=0.01)
