"""Audio metrics and benchmark lists for ``mmflow evaluate``: F5-TTS's WER and SIM-o protocols, their offline
proxies (Whisper tiny.en WER, resemblyzer's GE2E speaker similarity) and LibriSpeech-PC test-clean."""
