"""JAM-Flow's data: the synthetic speech + face corpus (``corpus``, with ``visemes`` driving the mouth) and the
preprocessing of real talking-face videos (``preprocess``) into the rows mmflow's trainer reads.

The speech-only half of the corpus (sentences and their espeak-ng speech) lives in the audio plugin
(``mmflow_audio_f5tts.speech_corpus``), so speech-only work needs no face plugin.
"""
