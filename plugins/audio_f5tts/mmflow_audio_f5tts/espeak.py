"""An offline speech engine: libespeak-ng through ctypes, with the time of every phoneme.

Why: a small model trained from scratch needs speech it can learn from without downloads, and text
conditioning that is aligned in time (see ``phonemes.py``). espeak-ng is a rule-based formant synthesiser,
so it is fast (hundreds of times real time on a CPU), needs no weights, and its C API reports each phoneme
with the exact sample where it starts.

Where the library comes from, first found wins:

1. the ``espeakng-loader`` wheel (``pip install espeakng-loader==0.2.4``), which bundles the library and
   its data, so nothing has to be installed with apt;
2. the environment variables ``ESPEAK_LIB`` (path of ``libespeak-ng.so``) and ``ESPEAK_DATA`` (the
   ``espeak-ng-data`` folder or the folder that holds it);
3. the system library (``apt-get install espeak-ng``).

Determinism: espeak-ng keeps synthesis state in C statics that are never reset (pitch-flutter position,
gain control, glottal-cycle counter), so a second utterance in the same process sounds slightly different
from the first; and libc ``rand()``, used for breath noise, is in a different state in every process. So it
the engine runs the library in a small helper process that initialises it once and *forks a fresh child for every
utterance*, which seeds ``rand()`` from the text and voice before speaking. Every utterance starts from the
same state, so the same text and voice give identical samples, in any process, thread or forked worker.
A fork costs about a millisecond; an utterance takes 10-20 ms.

Licence note: libespeak-ng is GPL-3.0. It is loaded only when an :class:`EspeakEngine` is used, and then
only inside that helper process, never into the caller's process; mmflow does not ship it.

This module imports nothing heavy at module level (no torch), so the helper process starts quickly.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

logger = logging.getLogger(__name__)

SILENCE = "_"
"""espeak-ng's mnemonic for a short pause; also used for the leading silence before the first phoneme."""

INSTALL_HINT = "pip install espeakng-loader==0.2.4"

MIN_RATE, MAX_RATE = 80, 450
"""Speaking rates (words per minute) espeak-ng accepts."""

# espeak-ng C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

_VOICE_HINT = (
    "list voices with EspeakEngine().list_voices() and variants (the part after '+') with "
    "EspeakEngine().list_variants()"
)


@dataclass(frozen=True)
class Phone:
    """One phoneme (espeak-ng mnemonic) and the time span it occupies in the waveform, in seconds."""

    symbol: str
    start: float
    end: float


@dataclass
class SpokenText:
    """Synthesised speech (mono float32) and its phonemes.

    ``phones`` cover the waveform without gaps: the first starts at 0, each ends where the next starts,
    the last ends at the end of the waveform.
    """

    text: str
    waveform: np.ndarray
    sample_rate: int
    phones: list[Phone] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: ``name`` is a voice with an optional ``+variant`` (``en-us+f3``).

    ``rate`` is in words per minute, ``pitch`` is espeak-ng's 0-100 scale (50 = the voice's own pitch).
    """

    name: str = "en-us"
    rate: int = 165
    pitch: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Voice: name must be a non-empty string such as 'en-us', got {self.name!r}")
        if not MIN_RATE <= self.rate <= MAX_RATE:
            raise ValueError(
                f"Voice: rate must be in [{MIN_RATE}, {MAX_RATE}] words per minute, got {self.rate}"
            )
        if not 0 <= self.pitch <= 100:
            raise ValueError(f"Voice: pitch must be in [0, 100], got {self.pitch}")


VOICES: tuple[Voice, ...] = (
    Voice("en-us"),
    Voice("en-us+f3", pitch=55),
    Voice("en-us+m3", rate=150, pitch=45),
    Voice("en-us+f1", rate=175),
    Voice("en-us+m7", rate=155, pitch=40),
    Voice("en-us+klatt", rate=160),
    Voice("en-us+f4", rate=170, pitch=60),
    Voice("en-us+m1", rate=180),
)
"""Distinct English voices (different variants, rates and pitches) for building a varied corpus."""


# ----------------------------------------------------------------------------------------------------------
# The library, as used inside the helper process.


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _VoiceInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _locate() -> tuple[str, str | None]:
    """(library path, data folder or None for the library's default), in the order the docstring gives."""
    try:
        import espeakng_loader
    except ImportError:
        espeakng_loader = None
    if espeakng_loader is not None:
        return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())
    library = os.environ.get("ESPEAK_LIB") or ctypes.util.find_library("espeak-ng")
    if not library:
        raise ImportError(
            f"espeak-ng was not found. Install it with `{INSTALL_HINT}` (bundles the library and its data), "
            "or `apt-get install espeak-ng`, or set ESPEAK_LIB to the path of libespeak-ng.so"
        )
    return library, os.environ.get("ESPEAK_DATA")


def _data_folder(data: str | os.PathLike[str]) -> Path:
    """The ``espeak-ng-data`` folder itself, given it or the folder that contains it."""
    path = Path(data)
    return path / "espeak-ng-data" if (path / "espeak-ng-data").is_dir() else path


class _Library:
    """libespeak-ng loaded and initialised in this process (only ever the helper process)."""

    def __init__(self) -> None:
        library, data = _locate()
        try:
            lib = ctypes.CDLL(library)
        except OSError as error:
            raise ImportError(
                f"could not load espeak-ng from {library}: {error}; try `{INSTALL_HINT}`"
            ) from error
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
        # Breath noise comes from libc rand(), whose state differs from process to process; newer versions
        # also have their own generator. Both are seeded per utterance (see ``synth``).
        self._libc_srand = ctypes.CDLL(None).srand
        self._libc_srand.argtypes = [ctypes.c_uint]
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None

        parent = str(_data_folder(data).parent) if data else None
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            parent.encode() if parent else None,
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise ImportError(
                f"espeak-ng ({library}) failed to initialise with data {parent or '(library default)'}; "
                f"check ESPEAK_DATA or `{INSTALL_HINT}`"
            )
        found = ctypes.c_char_p()
        version = lib.espeak_Info(ctypes.byref(found))
        self.lib = lib
        self.native_rate = int(rate)
        self.data = _data_folder(found.value.decode()) if found.value else None
        self.description = f"espeak-ng {(version or b'?').decode()} from {library}, data {self.data}"
        self.variants = (
            frozenset(p.name for p in (self.data / "voices" / "!v").glob("*") if p.is_file())
            if self.data
            else None
        )
        self._pcm: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _Callback(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, count, events) -> int:  # noqa: ANN001 - ctypes pointers
        if count > 0 and wav:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._events.append((events[i].id.string.decode("utf-8", "replace"), int(events[i].sample)))
            i += 1
        return 0

    def synth(self, text: str, name: str, rate: int, pitch: int) -> tuple[bytes, list[tuple[str, int]]]:
        """int16 samples (as bytes) at ``native_rate`` and (mnemonic, start sample) of every phoneme."""
        _, _, variant = name.partition("+")
        if variant and self.variants is not None and variant not in self.variants:
            raise ValueError(f"espeak-ng has no voice variant {variant!r} (in voice {name!r}); {_VOICE_HINT}")
        if self.lib.espeak_SetVoiceByName(name.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {name!r}; {_VOICE_HINT}")
        self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self._pcm, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        seed = zlib.crc32(f"{name}|{rate}|{pitch}|".encode() + data)
        self._libc_srand(seed)
        if self._set_seed is not None:
            self._set_seed(seed)
        status = self.lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        self.lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng failed to synthesise {text[:60]!r} (status {status})")
        pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, dtype=np.int16)
        return pcm.astype("<i2").tobytes(), self._events

    def voices(self) -> list[str]:
        """Names ``espeak_SetVoiceByName`` accepts: the voice files' names (``en-US``, ``en``, ``de``)."""
        listed = self.lib.espeak_ListVoices(None)
        names: set[str] = set()
        i = 0
        while listed[i]:
            identifier = listed[i].contents.identifier or b""
            names.add(identifier.rsplit(b"/", 1)[-1].decode("utf-8", "replace"))
            i += 1
        return sorted(names - {""})

    def handle(self, request: tuple) -> tuple:
        kind, *args = request
        if kind == "synth":
            return ("ok", *self.synth(*args))
        if kind == "voices":
            return ("ok", self.voices())
        if kind == "variants":
            return ("ok", sorted(self.variants or ()))
        raise RuntimeError(f"unknown request {kind!r}")


def _write_message(stream: IO[bytes] | int, message: Any) -> None:
    """Length-prefixed pickle; ``stream`` may be a raw file descriptor (used by forked children)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = struct.pack("<Q", len(payload)) + payload
    if isinstance(stream, int):
        view = memoryview(data)
        while view:
            view = view[os.write(stream, view) :]
    else:
        stream.write(data)
        stream.flush()


def _read_message(stream: IO[bytes]) -> Any:
    """The next message, or ``None`` at end of stream."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)  # noqa: S301 - our own helper process on a private pipe


def _serve() -> None:
    """Helper-process main loop: initialise once, answer each request from a freshly forked child."""
    out = sys.stdout.fileno()
    try:
        library = _Library()
    except ImportError as error:
        _write_message(out, ("error", "import", str(error)))
        return
    _write_message(out, ("ok", library.native_rate, library.description))
    while (request := _read_message(sys.stdin.buffer)) is not None:
        pid = os.fork()
        if pid == 0:  # the child: pristine library state, one request, then exit without cleanup
            try:
                reply = library.handle(request)
            except ValueError as error:
                reply = ("error", "value", str(error))
            except Exception as error:  # noqa: BLE001 - everything else goes back as a RuntimeError
                reply = ("error", "runtime", f"{type(error).__name__}: {error}")
            _write_message(out, reply)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            _write_message(
                out, ("error", "runtime", f"espeak-ng synthesis process died (wait status {status})")
            )


# ----------------------------------------------------------------------------------------------------------
# The caller's side.


class _Helper:
    """The helper process, seen from the caller: started on first use, one request at a time."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.owner = os.getpid()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", f"from {__name__} import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        hello = _read_message(self.process.stdout)
        if hello is None:
            self.close()
            raise ImportError(f"the espeak-ng helper process failed to start; try `{INSTALL_HINT}`")
        if hello[0] == "error":
            self.close()
            raise ImportError(hello[2])
        _, self.native_rate, description = hello
        logger.info(
            "%s (native rate %d Hz), in helper process %d", description, self.native_rate, self.process.pid
        )

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def request(self, *request: Any) -> tuple:
        try:
            _write_message(self.process.stdin, request)
            reply = _read_message(self.process.stdout)
        except (BrokenPipeError, OSError) as error:
            reply = None
            logger.debug("espeak-ng helper pipe failed: %s", error)
        if reply is None:
            self.close()
            raise RuntimeError("the espeak-ng helper process stopped unexpectedly; the next call restarts it")
        if reply[0] == "error":
            raise (ValueError if reply[1] == "value" else RuntimeError)(reply[2])
        return reply[1:]

    def close(self) -> None:
        if self.owner != os.getpid():  # inherited through fork: the parent owns the process
            return
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_LOCK = threading.Lock()
_HELPER: _Helper | None = None


def _helper() -> _Helper:
    """The process-wide helper (a new one after a fork or a crash); call with ``_LOCK`` held."""
    global _HELPER
    if _HELPER is None or not _HELPER.alive():
        if _HELPER is not None:
            _HELPER.close()
        _HELPER = _Helper()
    return _HELPER


def _forget_after_fork() -> None:
    """A forked child gets its own lock and, on first use, its own helper (the parent keeps its one)."""
    global _LOCK, _HELPER
    _LOCK = threading.Lock()
    _HELPER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _shutdown() -> None:
    global _HELPER
    if _HELPER is not None:
        _HELPER.close()
        _HELPER = None


def _contiguous_phones(
    events: list[tuple[str, int]], num_native: int, native_rate: int, seconds: float
) -> list[Phone]:
    """Turn phoneme start samples into back-to-back spans that cover ``[0, seconds]``.

    Zero-length phones (two events at one sample) cover no time and are dropped; events past the end of
    the audio are clipped.
    """
    starts = [(symbol, min(max(sample, 0), num_native)) for symbol, sample in events if symbol]
    if not starts or starts[0][1] > 0:
        starts.insert(0, (SILENCE, 0))
    phones: list[Phone] = []
    for i, (symbol, sample) in enumerate(starts):
        end_sample = starts[i + 1][1] if i + 1 < len(starts) else num_native
        if end_sample > sample:
            phones.append(Phone(symbol, sample / native_rate, end_sample / native_rate))
    if not phones:
        return [Phone(SILENCE, 0.0, seconds)]
    # Resampling can change the length by a fraction of a sample: pin the last end to the output waveform.
    phones[-1] = Phone(phones[-1].symbol, phones[-1].start, seconds)
    return phones


class EspeakEngine:
    """Text → speech (24 kHz by default) with phoneme timing.

    Cheap to create; all instances in a process share one helper process (see the module docstring).
    Thread-safe: requests are serialised by a lock.
    """

    def __init__(self, sample_rate: int | None = None) -> None:
        from .mel import SAMPLE_RATE

        sample_rate = SAMPLE_RATE if sample_rate is None else sample_rate
        if sample_rate <= 0:
            raise ValueError(f"EspeakEngine: sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        with _LOCK:
            self.native_rate = _helper().native_rate

    def synthesize(self, text: str, voice: Voice = Voice()) -> SpokenText:  # noqa: B008 - frozen dataclass
        """Speak ``text`` with ``voice``; deterministic (same text and voice → identical samples)."""
        from .audio_io import resample

        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"EspeakEngine.synthesize: text must be a non-empty string, got {text!r}")
        if "\0" in text:
            raise ValueError(
                "EspeakEngine.synthesize: text contains a NUL character, which espeak-ng cannot read"
            )
        if not isinstance(voice, Voice):
            raise TypeError(f"EspeakEngine.synthesize: voice must be a Voice, got {type(voice).__name__}")
        with _LOCK:
            helper = _helper()
            pcm_bytes, events = helper.request("synth", text.strip(), voice.name, voice.rate, voice.pitch)
            native_rate = helper.native_rate
        pcm = np.frombuffer(pcm_bytes, dtype="<i2")
        if pcm.size == 0:
            raise ValueError(f"EspeakEngine.synthesize: espeak-ng produced no audio for {text!r}")
        waveform = resample(pcm.astype(np.float32) / 32768.0, native_rate, self.sample_rate)
        phones = _contiguous_phones(events, pcm.size, native_rate, waveform.shape[-1] / self.sample_rate)
        return SpokenText(text=text, waveform=waveform, sample_rate=self.sample_rate, phones=phones)

    def phonemes(self, text: str, voice: Voice = Voice()) -> list[Phone]:  # noqa: B008 - frozen dataclass
        """Only the phones of :meth:`synthesize` (espeak-ng times phones by the audio it makes anyway)."""
        return self.synthesize(text, voice).phones

    def list_voices(self) -> list[str]:
        """Identifiers of the installed voices (``en-us``, ``en``, ``de`` ...), usable as ``Voice.name``."""
        with _LOCK:
            return _helper().request("voices")[0]

    def list_variants(self) -> list[str]:
        """Variant names for ``voice+variant`` (``f3``, ``m7``, ``klatt`` ...), from the data folder."""
        with _LOCK:
            return _helper().request("variants")[0]
