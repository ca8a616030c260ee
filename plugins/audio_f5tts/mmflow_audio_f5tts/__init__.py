"""mmflow plugin: the F5-TTS speech stream."""
