#!/usr/bin/python3
"""diffusers (PyTorch CPU) peer for bench/precision-bench.ts: the same work as Kiln's timed SD1.5 image.

What it times: one 512x512 SD1.5 txt2img image with random weights at the real shapes (nothing downloaded), fp32 on
the CPU with torch.set_num_threads(os.cpu_count()): a CLIP-L-shaped text transformer on 2 x 77 random token ids
(prompt + negative; a torch.nn.TransformerEncoder stand-in with CLIP-L's sizes and causal mask, since transformers
is not installed), 20 EulerDiscreteScheduler steps with CFG (each one UNet2DConditionModel call at batch 2), and the
AutoencoderKL decode of the 64x64 latent to uint8 pixels. Model construction and a warm-up (1 UNet call, a decode)
are not timed, as Kiln's bench also times warmed sessions. The attention processor is the one diffusers picks
(AttnProcessor on torch 1.13, which lacks scaled_dot_product_attention; printed). Prints "image_s=<seconds>", which
precision-bench.ts takes as the peer's image time; exits 0 on success.

    /usr/bin/python3 bench/peers/diffusers_sd15.py [--size 512] [--steps 20] [--threads N]

Installed offline on Debian bookworm (no PyPI): `apt-get install -y python3-torch python3-numpy python3-regex
python3-requests python3-filelock python3-importlib-metadata python3-pil python3-yaml python3-tqdm python3-packaging
python3-typing-extensions python3-fsspec` (torch 1.13.1), then the pure-Python sources, outside this repository:
diffusers v0.19.3 (de9c72d5, the newest release whose models import without the compiled safetensors package) and
huggingface_hub v0.16.4, e.g. `git archive v0.19.3 src/diffusers | tar -x --strip-components=1 -C /work/peer`
(same for src/huggingface_hub). The script puts $KILN_PEER_PATH (default /work/peer) on sys.path.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.environ.get("KILN_PEER_PATH", "/work/peer"))

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel  # noqa: E402

# runwayml/stable-diffusion-v1-5's configs (the same as bench/specs.ts SD15).
UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
    norm_eps=1e-5,
    use_linear_projection=False,
)
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class ClipLText(torch.nn.Module):
    """CLIP-L text encoder's sizes (49408 tokens, 77 positions, 12 pre-norm layers, 768 wide, 12 heads, 3072 MLP)."""

    def __init__(self):
        super().__init__()
        self.tokens = torch.nn.Embedding(49408, 768)
        self.positions = torch.nn.Parameter(torch.randn(77, 768) * 0.01)
        layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True, norm_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
        self.final_norm = torch.nn.LayerNorm(768)
        self.register_buffer("causal", torch.triu(torch.full((77, 77), float("-inf")), diagonal=1))

    def forward(self, ids):
        return self.final_norm(self.layers(self.tokens(ids) + self.positions, mask=self.causal))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if args.size % 64 or not 64 <= args.size <= 1024 or not 1 <= args.steps <= 50:
        sys.exit("--size must be a multiple of 64 from 64 to 1024, --steps from 1 to 50")
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    build0 = time.perf_counter()
    text = ClipLText().eval()
    unet = UNet2DConditionModel(**UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    processors = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    build_s = time.perf_counter() - build0

    ids = torch.randint(0, 49408, (2, 77))  # negative prompt, prompt
    latent_size = args.size // 8
    cfg = 7.0

    def image(steps):
        t0 = time.perf_counter()
        cond = text(ids)
        t1 = time.perf_counter()
        scheduler.set_timesteps(steps)
        x = torch.randn(1, 4, latent_size, latent_size) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            xin = scheduler.scale_model_input(torch.cat([x, x]), t)
            uncond_eps, cond_eps = unet(xin, t, encoder_hidden_states=cond).sample.chunk(2)
            x = scheduler.step(uncond_eps + cfg * (cond_eps - uncond_eps), t, x).prev_sample
        t2 = time.perf_counter()
        pixels = vae.decode(x / 0.18215).sample
        pixels = ((pixels / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels, t1 - t0, (t2 - t1) / steps, time.perf_counter() - t2

    with torch.inference_mode():
        warm0 = time.perf_counter()
        image(1)  # warm-up: one UNet call and one decode at the real shapes
        warm_s = time.perf_counter() - warm0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        out, text_s, step_s, decode_s = image(args.steps)
        image_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    assert out.shape == (1, 3, args.size, args.size)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"  diffusers peer: torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} threads,"
        f" attention {'/'.join(processors)}; {args.size}x{args.size}, {args.steps} steps Euler, CFG batch 2;"
        f" build {build_s:.1f} s, warm-up {warm_s:.1f} s; image {image_s:.1f} s (process CPU {cpu_s:.1f} s,"
        f" text {text_s:.2f} s, UNet {step_s:.2f} s per CFG step, VAE decode {decode_s:.2f} s), peak RSS {rss_gb:.2f} GB (load {os.getloadavg()[0]:.2f})"
    )
    print(f"image_s={image_s:.3f}", flush=True)


if __name__ == "__main__":
    main()
