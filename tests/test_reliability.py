"""The bad-input battery of ``mmflow generate``: every case is one line of :data:`CASES`.

Each case runs the real command line (the ``mmflow generate`` parser and ``run_generate``, on the embedded default
model or a damaged copy of it) and asserts the error class, that the message names the bad input, and that the
run created no output file or folder (a case may prepare something at the output path first; it must survive
unchanged). Adding a case: one line with an id, the arguments (``{f}`` is the folder of the inputs that
:func:`inputs` makes), the exception class and a fragment of the message naming the input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmflow_jamflow")

from mmflow_audio_f5tts.audio_io import AudioInputError, write_wav  # noqa: E402
from mmflow_jamflow.cli import add_generate, run_generate  # noqa: E402
from mmflow_jamflow.default_model import default_model_path  # noqa: E402
from mmflow_jamflow.pipeline import MissingInputError  # noqa: E402
from mmflow_motion_liveportrait.face import FaceError, NoFaceError, demo_portrait_path  # noqa: E402
from mmflow_motion_liveportrait.motion_template import (  # noqa: E402
    MotionTemplate,
    MotionTemplateError,
    save_motion_template,
)

from mmflow.io import LOCK_NAME, OutputLockedError, folder_lock  # noqa: E402
from mmflow.model_folder import ModelFolderError  # noqa: E402
from mmflow.validation import InputRangeError  # noqa: E402

TEXT = ["--text", "Hi."]
NO_VIDEO = [*TEXT, "--no-video"]

# id, arguments, error class, fragment of the message that names the input
CASES = [
    # item 5: numbers, refused before the model loads
    ("speed-zero", [*TEXT, "--speed", "0"], InputRangeError, "speed"),
    ("speed-tiny", [*TEXT, "--speed", "1e-6"], InputRangeError, "speed"),
    ("duration-inf", [*TEXT, "--duration", "inf"], InputRangeError, "duration"),
    ("duration-huge", [*TEXT, "--duration", "1e9"], InputRangeError, "duration"),
    ("duration-negative", [*TEXT, "--duration", "-1"], InputRangeError, "duration"),
    ("cfg-huge", [*TEXT, "--cfg", "1e30"], InputRangeError, "--cfg"),
    ("cfg-nan", [*TEXT, "--cfg", "nan"], InputRangeError, "--cfg"),
    ("cfg-motion-negative", [*TEXT, "--cfg-motion", "-3"], InputRangeError, "motion"),
    ("steps-zero", [*TEXT, "--steps", "0"], InputRangeError, "--steps"),
    ("steps-huge", [*TEXT, "--steps", "100000000"], InputRangeError, "--steps"),
    ("seed-negative", [*TEXT, "--seed", "-1"], InputRangeError, "--seed"),
    ("seed-huge", [*TEXT, "--seed", str(2**70)], InputRangeError, "--seed"),
    ("span-reversed", ["--task", "edit", *TEXT, "--audio", "{f}/speech.wav", "--motion", "{f}/motion.npz",
                       "--span", "audio:1.0:0.5"], InputRangeError, "span"),
    ("span-inf", ["--task", "edit", *TEXT, "--audio", "{f}/speech.wav", "--motion", "{f}/motion.npz",
                  "--span", "audio:0:inf"], InputRangeError, "span"),
    ("motion-fps-tiny", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/fps.npz"], MotionTemplateError, "fps.npz"),
    ("motion-pkl-256gib", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/huge.pkl"], MotionTemplateError, "huge.pkl"),
    ("motion-npz-header-lies", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/lies.npz"], MotionTemplateError,
     "lies.npz"),
    ("text-too-long", [*NO_VIDEO[2:], "--text", "Hello there. " * 2000], InputRangeError, "speech to generate"),
    # item 2: output names and paths
    ("stem-parent", [*TEXT, "--stem", "../escape"], ValueError, "../escape"),
    ("stem-absolute", [*TEXT, "--stem", "/tmp/abs"], ValueError, "/tmp/abs"),
    ("stem-empty", [*TEXT, "--stem", ""], ValueError, "stem ''"),
    ("stem-dotdot", [*TEXT, "--stem", ".."], ValueError, "'..'"),
    ("out-mp4-is-folder", [*TEXT, "--out", "{out}"], FileExistsError, "sample.mp4"),
    ("out-wav-is-folder", [*TEXT, "--out", "{out}"], FileExistsError, "sample.wav"),
    ("out-is-a-file", [*TEXT, "--out", "{out}/file.txt"], NotADirectoryError, "file.txt"),
    ("out-locked", [*TEXT, "--out", "{out}"], OutputLockedError, "{out}"),
    # item 6
    ("model-truncated-safetensors", ["--model", "{f}/truncated", *NO_VIDEO], ModelFolderError, "diffusion_pytorch_model"),
    ("model-foreign-module", ["--model", "{f}/foreign", *NO_VIDEO], ImportError, "antigravity"),
    ("audio-silent", ["--task", "audio_to_motion", "--audio", "{f}/silent.wav", "--no-video"], AudioInputError,
     "silent.wav"),
    ("motion-zero-frames", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/zero.npz"], MotionTemplateError,
     "zero.npz"),
    ("motion-image", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/me.jpg"], ValueError, "me.jpg"),
    # classes handled before this battery
    ("text-empty", ["--text", "   ", "--no-video"], MissingInputError, "text"),
    ("text-control-chars", ["--text", "\x00\x01\x02", "--no-video"], ValueError, "text contains a NUL"),
    ("audio-broken", ["--task", "audio_to_motion", "--audio", "{f}/broken.wav", "--no-video"], AudioInputError,
     "broken.wav"),
    ("audio-missing", ["--task", "audio_to_motion", "--audio", "{f}/nope.wav", "--no-video"], FileNotFoundError,
     "nope.wav"),
    ("audio-empty", ["--task", "audio_to_motion", "--audio", "{f}/empty.wav", "--no-video"], AudioInputError,
     "empty.wav"),
    ("portrait-broken", [*TEXT, "--portrait", "{f}/broken.jpg"], FaceError, "broken.jpg"),
    ("portrait-no-face", [*TEXT, "--portrait", "{f}/gray.png"], NoFaceError, "gray.png"),
    ("motion-evil-pickle", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/evil.pkl"], MotionTemplateError,
     "evil.pkl"),
    ("motion-unknown-arrays", ["--task", "dubbing", *NO_VIDEO, "--motion", "{f}/unknown.npz"], MotionTemplateError,
     "unknown.npz"),
    ("model-missing-part", ["--model", "{f}/no_transformer", *NO_VIDEO], ModelFolderError, "component 'transformer'"),
    ("model-unknown-weights", ["--model", "{f}/unknown_weights", *NO_VIDEO], ValueError, "bogus.weight"),
    ("outputs-unknown-kind", [*TEXT, "--outputs", "wav,gif"], ValueError, "gif"),
    ("span-unknown-stream", ["--task", "edit", *TEXT, "--audio", "{f}/speech.wav", "--motion", "{f}/motion.npz",
                             "--span", "lips:0:1"], MissingInputError, "lips"),
    ("model-not-a-folder", ["--model", "{f}/nothing", *NO_VIDEO], FileNotFoundError, "nothing"),
]


def _prepare(case: str, out: Path) -> None:
    """What a case puts at its output path before running (it must survive the run unchanged)."""
    if case == "out-mp4-is-folder":
        (out / "sample.mp4").mkdir(parents=True)
        (out / "sample.mp4" / "precious.txt").write_text("the user's")
    elif case == "out-wav-is-folder":
        (out / "sample.wav").mkdir(parents=True)
    elif case == "out-locked":
        out.mkdir()
    elif case == "out-is-a-file":
        out.mkdir()
        (out / "file.txt").write_text("the user's")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good and bad input files, and damaged copies of the embedded default model."""
    f = tmp_path_factory.mktemp("inputs")
    t = np.arange(24000 * 2) / 24000
    write_wav(f / "speech.wav", (0.2 * np.sin(2 * np.pi * 140 * t)).astype(np.float32))
    write_wav(f / "silent.wav", np.zeros(24000, np.float32))
    (f / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(256)))
    with wave.open(str(f / "empty.wav"), "wb") as empty:
        empty.setnchannels(1), empty.setsampwidth(2), empty.setframerate(24000)
    (f / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    from PIL import Image

    Image.new("RGB", (256, 256), (128, 128, 128)).save(f / "gray.png")
    shutil.copy(demo_portrait_path(), f / "me.jpg")
    frames = 10
    arrays = {"scale": np.ones((frames, 1), np.float32), "R": np.tile(np.eye(3, dtype=np.float32), (frames, 1, 1)),
              "exp": np.zeros((frames, 21, 3), np.float32), "t": np.zeros((frames, 3), np.float32)}
    save_motion_template(MotionTemplate(**arrays), f / "motion.npz")
    np.savez(f / "fps.npz", fps=np.float64(1e-9), **arrays)
    np.savez(f / "zero.npz", **{name: value[:0] for name, value in arrays.items()})
    np.savez(f / "unknown.npz", extra=np.zeros(3), **arrays)
    _lying_npz(f / "lies.npz")
    # _reconstruct(ndarray, (2**38,), b'b'): a 72-byte pickle asking numpy for 256 GiB
    (f / "huge.pkl").write_bytes(b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93\x8c\x05numpy\x8c"
                                 b"\x07ndarray\x93\x8a\x05\x00\x00\x00\x00\x40\x85C\x01b\x87R.")
    (f / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo owned > " + str(f / "owned").encode() + b"'\ntR.")
    _model_copies(f)
    return f


def _lying_npz(path: Path) -> None:
    """An .npz whose ``exp`` header declares 2**36 floats (256 GiB) over 16 bytes of data."""
    import zipfile

    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (68719476736,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(16)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("exp.npy", member)


def _model_copies(f: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    default = default_model_path()
    truncated = shutil.copytree(default, f / "truncated")
    weights = next((truncated / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    foreign = shutil.copytree(default, f / "foreign")
    index = json.loads((foreign / "model_index.json").read_text())
    index["vocoder"] = ["antigravity", "Vocos"]  # importing it would open a web browser
    (foreign / "model_index.json").write_text(json.dumps(index))
    missing = shutil.copytree(default, f / "no_transformer")
    shutil.rmtree(missing / "transformer")
    unknown = shutil.copytree(default, f / "unknown_weights")
    weights = next((unknown / "transformer").glob("*.safetensors"))
    tensors = load_file(weights)
    save_file({**tensors, "bogus.weight": torch.zeros(2)}, weights)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmflow")
    add_generate(parser.add_subparsers(dest="command"))
    return parser.parse_args(["generate", *argv])


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("case", "argv", "error", "names"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_by_name_and_writes_nothing(case, argv, error, names, inputs, tmp_path):
    out = tmp_path / "out"
    _prepare(case, out)
    argv = [arg.replace("{f}", str(inputs)).replace("{out}", str(out)) for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    with folder_lock(out) if case == "out-locked" else contextlib.nullcontext():  # another run holds the lock
        before = _tree(tmp_path)
        with pytest.raises(error) as raised:
            run_generate(_parse(argv))
        after = _tree(tmp_path)
    message = str(raised.value)
    assert names.replace("{out}", str(out)) in message, message
    assert "\n" not in message.strip(), message
    assert after == before, "the failed run created or changed files"
    assert not (inputs / "owned").exists(), "a pickle ran code"


def test_a_failed_run_removes_only_the_empty_folders_it_created(inputs, tmp_path):
    keep = tmp_path / "kept"
    keep.mkdir()
    with pytest.raises(NoFaceError):
        run_generate(_parse([*TEXT, "--portrait", str(inputs / "gray.png"), "--out", str(keep / "a" / "b")]))
    assert _tree(tmp_path) == {"kept": None}


def test_the_command_line_reports_one_line_and_exit_status_2(inputs, tmp_path, capsys):
    from mmflow_jamflow.cli import _generate

    (tmp_path / "sample.mp4").mkdir()
    assert _generate(_parse([*TEXT, "--out", str(tmp_path)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmflow: error: ") and "sample.mp4" in err and "\n" not in err


def test_the_lock_is_released_and_removed_after_a_run(tmp_path):
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
    with folder_lock(tmp_path):  # free again
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))
