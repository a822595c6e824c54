"""Text-conditioned pieces: a word-level tokenizer built locally from the caption vocabulary, a small CLIP text
encoder, and `DigitsTextPipeline`, a diffusers pipeline (UNet2DConditionModel + CLIPTextModel + tokenizer + scheduler)
that save_pretrained / from_pretrained round-trips and generates from prompts with classifier-free guidance.
Nothing is downloaded: the tokenizer is a `tokenizers` WordLevel model wrapped as a transformers fast tokenizer.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


# One definition of a word, used both to build the vocabulary and by the tokenizer's pre-tokenizer, so that every word
# of the vocabulary encodes as itself ("left-slanted" stays one word; it once split into three unknown tokens).
WORD_PATTERN = r"[\w'-]+|[^\w\s]"


def words(text: str) -> list[str]:
    return re.findall(WORD_PATTERN, text.lower())


def build_tokenizer(
    captions: Sequence[str], max_length: int = 16, extra_words: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over every word of `captions` (+ `extra_words`), with [BOS] ... [EOS] around each text."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for text in list(captions) + list(extra_words):
        for w in words(text):
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )


def build_text_encoder(vocab_size: int, hidden_size: int, layers: int, heads: int, max_length: int) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=max_length,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            projection_dim=hidden_size,
        )
    )


def tokenize(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


class DigitsTextPipeline(DiffusionPipeline):
    """Text-to-image for small pixel-space targets: prompts -> CLIP text features -> cross-attention UNet."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(tokenize(self.tokenizer, prompts).to(self.text_encoder.device))[0]

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1], (N, C, H, W)."""
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts))
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        c = self.unet.config
        x = torch.randn((len(prompts), c.in_channels, c.sample_size, c.sample_size), generator=generator)
        for t in scheduler.timesteps:
            eps = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            e_u, e_c = eps.chunk(2)
            x = scheduler.step(e_u + guidance_scale * (e_c - e_u), t, x).prev_sample
        return x.clamp(-1, 1)
