"""tts-operator: reconciles TTSService resources into GPU text-to-speech services."""
