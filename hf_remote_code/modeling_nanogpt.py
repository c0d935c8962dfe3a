"""model.py's GPT behind the transformers causal-LM interface, for an export_hf.py export (trust_remote_code)."""
import dataclasses
import re

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_nanogpt import NanoGPTConfig

try:  # in an export: transformers follows `from .name import` lines and copies model.py beside this file
    from .model import GPT, GPTConfig
except ImportError:  # in the repo: this package sits beside the top-level model.py
    from model import GPT, GPTConfig


class NanoGPTForCausalLM(PreTrainedModel, GenerationMixin):
    """GPT from model.py behind the transformers causal-LM interface.

    No KV cache through transformers (each generate step re-runs the prefix) and no padding:
    an attention_mask with zeros raises. Right-padded scoring (lm-evaluation-harness loglikelihood)
    passes no mask and is exact, since attention is causal.
    """
    config_class = NanoGPTConfig
    base_model_prefix = "gpt"
    main_input_name = "input_ids"
    _no_split_modules = ["Block", "ParallelBlock"]
    _tied_weights_keys = {"gpt.lm_head.weight": "gpt.transformer.wte.weight"}

    def __init__(self, config: NanoGPTConfig):
        super().__init__(config)
        self.gpt = GPT(GPTConfig(**config.gpt_config))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Weights come from the checkpoint; GPT() already initialised everything else."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "NanoGPTForCausalLM":
        model = super().from_pretrained(*args, **kwargs)
        model.rebuild_buffers()
        return model

    @torch.no_grad()
    def rebuild_buffers(self) -> None:
        """Recompute non-persistent buffers (RoPE tables, ALiBi slopes): transformers loads on the meta
        device and leaves them uninitialised. They come from a 1-layer GPT with the same positions."""
        c = self.gpt.config
        tiny = dataclasses.replace(c, n_layer=1, vocab_size=1, pad_vocab_multiple=1, mlp_hidden=1, value_embeds=0,
                                   doc_mask_token=None)  # these two must fit n_layer and vocab_size
        ref = dict(GPT(tiny).named_buffers())
        for name, buf in self.gpt.named_buffers():
            key = re.sub(r"^transformer\.h\.\d+\.", "transformer.h.0.", name)
            if key not in ref:
                raise RuntimeError(f"cannot rebuild buffer {name}")
            module_name, _, attr = name.rpartition(".")
            module = self.gpt.get_submodule(module_name) if module_name else self.gpt
            setattr(module, attr, ref[key].to(buf.device))

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.gpt.transformer.wte

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.gpt.lm_head

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, past_key_values=None, return_dict=None,
                **kwargs) -> CausalLMOutputWithPast:
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("NanoGPTForCausalLM does not support padding masks (attention_mask with zeros); "
                             "run unpadded batches or batch size 1")
        logits = self.gpt(input_ids)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                      **kwargs) -> dict:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
