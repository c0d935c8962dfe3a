"""Configuration of a nanoGPT-style model exported by export_hf.py (trust_remote_code)."""
from transformers import PretrainedConfig


class NanoGPTConfig(PretrainedConfig):
    """Carries the original GPTConfig fields in `gpt_config`."""
    model_type = "nanogpt"

    def __init__(self, gpt_config: dict | None = None, **kwargs):
        self.gpt_config = dict(gpt_config or {})
        g = self.gpt_config
        self.vocab_size = g.get("vocab_size")
        self.hidden_size = g.get("n_embd")
        self.num_hidden_layers = g.get("n_layer")
        self.num_attention_heads = g.get("n_head")
        self.max_position_embeddings = g.get("block_size")
        kwargs.setdefault("tie_word_embeddings", g.get("tie_embeddings", True))
        super().__init__(**kwargs)
