"""tts-runtime: the batching ONNX text-to-speech server each TTSService pod runs."""
