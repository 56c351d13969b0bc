"""A text-to-image diffusion pipeline built from published model configurations with random weights
(no download): a CLIP text encoder (transformers), a UNet denoiser and a VAE (diffusers), and an
optional ControlNet, split into the typed operators gensched deploys and scales on their own:
``TextEncoder`` -> ``Denoiser`` (every step; asks the ``ControlNet`` each step when the workflow uses
one) -> ``VAEDecoder``.

``TOY`` configurations run in milliseconds on a CPU (tests); ``SD15`` are Stable Diffusion 1.5's shapes
(860M-parameter UNet), used by the profiler and the benchmark only. ``generate`` is the unsplit
reference the split serving path must reproduce exactly. A byte-level tokenizer stands in for CLIP's
BPE vocabulary (no vocabulary file to download).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
VAE_SCALE = 0.18215


@dataclass(frozen=True)
class PipelineConfig:
    """Component configurations (dicts for the libraries' constructors) and the latent geometry."""

    name: str
    text: dict[str, Any]
    unet: dict[str, Any]
    vae: dict[str, Any]
    controlnet: dict[str, Any]
    tokens: int = 77  # prompt length after padding
    vae_factor: int = 8  # pixels per latent pixel
    latent_channels: int = 4

    def latent_shape(self, pixels: int) -> tuple[int, int, int]:
        side = pixels // self.vae_factor
        return (self.latent_channels, side, side)


TOY = PipelineConfig(
    name="toy",
    text={"vocab_size": 300, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
          "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2,
          "pad_token_id": 1, "projection_dim": 32},
    unet={"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
          "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
          "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
          "attention_head_dim": 8, "norm_num_groups": 8},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (16, 32),
         "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
         "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"), "layers_per_block": 1, "norm_num_groups": 8,
         "sample_size": 16},
    controlnet={"in_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
                "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "cross_attention_dim": 32,
                "attention_head_dim": 8, "norm_num_groups": 8, "conditioning_embedding_out_channels": (8, 16)},
    vae_factor=2,
)

# Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5 model_index: CLIP ViT-L/14 text encoder, UNet, VAE)
# and the lllyasviel ControlNet v1.1 shapes.
SD15 = PipelineConfig(
    name="sd15",
    text={"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
          "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
    unet={"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
          "block_out_channels": (320, 640, 1280, 1280),
          "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
          "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
          "cross_attention_dim": 768, "attention_head_dim": 8},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
         "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
         "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512},
    controlnet={"in_channels": 4, "layers_per_block": 2, "block_out_channels": (320, 640, 1280, 1280),
                "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                     "DownBlock2D"),
                "cross_attention_dim": 768, "attention_head_dim": 8},
)
CONFIGS = {c.name: c for c in (TOY, SD15)}


def _seeded(seed: int, build: Any) -> Any:
    torch.manual_seed(seed)
    return build().eval()


def text_encoder(cfg: PipelineConfig, seed: int = 0) -> CLIPTextModel:
    return _seeded(seed, lambda: CLIPTextModel(CLIPTextConfig(**cfg.text)))


def unet(cfg: PipelineConfig, seed: int = 0) -> UNet2DConditionModel:
    return _seeded(seed + 1, lambda: UNet2DConditionModel(**cfg.unet))


def vae(cfg: PipelineConfig, seed: int = 0) -> AutoencoderKL:
    return _seeded(seed + 2, lambda: AutoencoderKL(**cfg.vae))


def controlnet(cfg: PipelineConfig, seed: int = 0) -> ControlNetModel:
    return _seeded(seed + 3, lambda: ControlNetModel(**cfg.controlnet))


def scheduler() -> DDIMScheduler:
    """DDIM: each step depends only on its timestep, so any replica can run any step."""
    return DDIMScheduler(**SCHEDULER)


def tokenize(cfg: PipelineConfig, prompts: list[str]) -> torch.Tensor:
    """Byte-level ids padded to ``cfg.tokens`` (BOS, bytes shifted past the special ids, EOS, padding)."""
    vocab = int(cfg.text["vocab_size"])
    bos, eos, pad = (int(cfg.text[k]) for k in ("bos_token_id", "eos_token_id", "pad_token_id"))
    rows = []
    for p in prompts:
        ids = [bos, *[3 + b % (vocab - 3) for b in p.encode("utf-8")][: cfg.tokens - 2], eos]
        rows.append(ids + [pad] * (cfg.tokens - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


@dataclass(frozen=True)
class ImageRequest:
    """One image: the request mix of the benchmark varies steps, size, guidance and workflow."""

    prompt: str
    steps: int = 4
    pixels: int = 16
    guidance: float = 0.0  # > 1: classifier-free guidance (the denoiser runs twice per step)
    seed: int = 0
    control: bool = False  # the ControlNet workflow (a conditioning image derived from the seed)

    @property
    def cfg_on(self) -> bool:
        return self.guidance > 1.0


# -- the operators: each a pure function of its inputs, so any replica serves any request -------------

@torch.no_grad()
def encode_text(te: CLIPTextModel, cfg: PipelineConfig, prompts: list[str]) -> torch.Tensor:
    """TextEncoder operator: prompt embeddings [batch, tokens, hidden]."""
    return te(tokenize(cfg, prompts)).last_hidden_state


def initial_latents(cfg: PipelineConfig, req: ImageRequest) -> torch.Tensor:
    g = torch.Generator().manual_seed(req.seed)
    return torch.randn((1, *cfg.latent_shape(req.pixels)), generator=g)


def control_image(req: ImageRequest) -> torch.Tensor:
    g = torch.Generator().manual_seed(req.seed + 7919)
    return torch.rand((1, 3, req.pixels, req.pixels), generator=g)


@torch.no_grad()
def control_residuals(cn: ControlNetModel, latents: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                      image: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """ControlNet operator, one step: the residuals the UNet adds to its skip connections."""
    down, mid = cn(latents, t, encoder_hidden_states=emb, controlnet_cond=image, return_dict=False)
    return tuple(down), mid


@torch.no_grad()
def denoise_step(un: UNet2DConditionModel, latents: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                 guidance: float, residuals: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None = None
                 ) -> torch.Tensor:
    """One UNet evaluation (twice the batch with guidance: unconditional and conditional)."""
    x = torch.cat([latents, latents]) if guidance > 1.0 else latents
    kw = {}
    if residuals is not None:
        kw = {"down_block_additional_residuals": residuals[0], "mid_block_additional_residual": residuals[1]}
    eps = un(x, t, encoder_hidden_states=emb, return_dict=False, **kw)[0]
    if guidance > 1.0:
        uncond, cond = eps.chunk(2)
        eps = uncond + guidance * (cond - uncond)
    return eps


@torch.no_grad()
def decode_latents(va: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """VAEDecoder operator: images in [0, 1], [batch, 3, pixels, pixels]."""
    return (va.decode(latents / VAE_SCALE, return_dict=False)[0] / 2 + 0.5).clamp(0, 1)


@dataclass
class Pipeline:
    """The unsplit pipeline (all components in one process): the reference for the split one."""

    cfg: PipelineConfig
    seed: int = 0
    te: CLIPTextModel = field(init=False)
    un: UNet2DConditionModel = field(init=False)
    va: AutoencoderKL = field(init=False)
    cn: ControlNetModel = field(init=False)

    def __post_init__(self) -> None:
        self.te, self.un = text_encoder(self.cfg, self.seed), unet(self.cfg, self.seed)
        self.va, self.cn = vae(self.cfg, self.seed), controlnet(self.cfg, self.seed)

    @torch.no_grad()
    def generate(self, req: ImageRequest) -> torch.Tensor:
        emb = embeddings(self.te, self.cfg, req)
        latents = denoise(self.un, self.cn, self.cfg, req, emb)
        return decode_latents(self.va, latents)


def embeddings(te: CLIPTextModel, cfg: PipelineConfig, req: ImageRequest) -> torch.Tensor:
    """Unconditional (empty prompt) then conditional embeddings with guidance, else conditional only."""
    return encode_text(te, cfg, ["", req.prompt] if req.cfg_on else [req.prompt])


class Denoising:
    """One request's denoising loop, step by step (so the serving path can call the ControlNet
    deployment between steps): ``control_inputs`` for the ControlNet, then ``step``."""

    def __init__(self, cfg: PipelineConfig, req: ImageRequest, emb: torch.Tensor) -> None:
        self.req, self.emb = req, emb
        self.sched = scheduler()
        self.sched.set_timesteps(req.steps)
        self.timesteps = list(self.sched.timesteps)
        self.latents = initial_latents(cfg, req)
        self.image = control_image(req) if req.control else None

    def control_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.image is not None
        x = torch.cat([self.latents, self.latents]) if self.req.cfg_on else self.latents
        img = torch.cat([self.image, self.image]) if self.req.cfg_on else self.image
        return x, img

    @torch.no_grad()
    def step(self, un: UNet2DConditionModel, t: torch.Tensor,
             residuals: tuple[tuple[torch.Tensor, ...], torch.Tensor] | None) -> None:
        eps = denoise_step(un, self.latents, t, self.emb, self.req.guidance, residuals)
        self.latents = self.sched.step(eps, t, self.latents, return_dict=False)[0]


@torch.no_grad()
def denoise(un: UNet2DConditionModel, cn: ControlNetModel | None, cfg: PipelineConfig, req: ImageRequest,
            emb: torch.Tensor) -> torch.Tensor:
    """The Denoiser operator's loop: ``req.steps`` DDIM steps (asking the ControlNet each step)."""
    run = Denoising(cfg, req, emb)
    for t in run.timesteps:
        res = None
        if req.control:
            assert cn is not None
            x, img = run.control_inputs()
            res = control_residuals(cn, x, t, emb, img)
        run.step(un, t, res)
    return run.latents
