"""A JAM-Flow output's video is rendered when it is written, batch by batch, not when the pipeline returns; its
frames, cut by remove_silence or not, are those of rendering the whole motion at once."""

import numpy as np
import pytest


class Counting:
    """A renderer that counts the frames it renders and otherwise is the fallback renderer."""

    def __init__(self, inner):
        from mmflow_motion_liveportrait.frames import StreamingRenderer

        self.inner, self.rendered = inner, []
        self.video = lambda motion, progress=False: StreamingRenderer.video(self, motion, progress)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render_frames(self, driving, index):
        self.rendered.append(len(index))
        return self.inner.render_frames(driving, index)


def test_the_video_renders_while_it_is_written_and_cuts_without_rendering(tmp_path):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("dlib", reason="the fallback renderer finds the face with dlib")
    from mmflow_jamflow import JAMFlowPipeline
    from mmflow_jamflow.default_model import default_model_path
    from mmflow_motion_liveportrait.face import demo_portrait_path
    from mmflow_motion_liveportrait.frames import RenderedVideo
    from mmflow_motion_liveportrait.render import make_renderer
    from mmflow_motion_liveportrait.video import write_video

    pipe = JAMFlowPipeline.from_pretrained(default_model_path())
    renderer = Counting(make_renderer(demo_portrait_path(), size=128))
    out = pipe("talking_head", "Yes. ... ... ... No.", renderer=renderer, num_inference_steps=4, seed=1,
               progress=False)
    video = out.videos[0]
    assert isinstance(video, RenderedVideo) and len(video) == len(out.motions[0]) and renderer.rendered == []
    whole = renderer.inner.render(out.motions[0], progress=False)  # the frames all at once, as before

    cut = out.remove_silence(min_silence=0.2, keep=0.1)
    assert renderer.rendered == [] and 0 < len(cut.videos[0]) == len(cut.motions[0]) < len(video)
    kept = [np.flatnonzero((out.motions[0] == frame).all(axis=(1, 2)))[0] for frame in cut.motions[0]]
    np.testing.assert_array_equal(np.asarray(cut.videos[0]), whole[kept])  # the cut's frames, rendered lazily

    renderer.rendered.clear()
    out.save(tmp_path, kinds=("mp4",))
    assert sum(renderer.rendered) == len(video) and max(renderer.rendered) <= renderer.batch_size
    eager = write_video(tmp_path / "eager.mp4", whole, out.fps, out.audios[0], out.sample_rate)
    assert (tmp_path / "sample.mp4").read_bytes() == eager.read_bytes()  # the same file as writing all frames
