"""The code a remote-code export runs inside transformers (`trust_remote_code=True`).

export_hf.py copies these files, unchanged, into an export directory: configuration_nanogpt.py and
modeling_nanogpt.py (with model.py beside them) for NanoGPTForCausalLM, tokenization_nanogpt.py for
sentencepiece tokenizers that no fast tokenizer reproduces. Here they are a package so that the tests import them.
"""
