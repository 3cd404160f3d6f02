"""Local GGUF models through llama.cpp: the embedded default, loading, prompt rendering, generation workers."""
