"""Prompt compression for the chosen tier: tool schema compaction, tool selection and history compaction.

The gateway builds one `Compressor` per tier from that tier's `CompressionSettings` and a `TokenCounter` for its
model (`FrontierTokenCounter` for OpenAI-style frontier models), and calls `compress` on the request path.
"""

from prompt_compression.compressor import CompressionResult, Compressor
from prompt_compression.settings import CompressionSettings
from prompt_compression.tokens import FrontierTokenCounter, TokenCounter

__all__ = ["CompressionResult", "CompressionSettings", "Compressor", "FrontierTokenCounter", "TokenCounter"]
