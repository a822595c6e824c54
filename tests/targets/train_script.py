"""A team's own training script, as the tests of command recipes use it: plain PyTorch + diffusers, its own loop
(not diffmia's), reading an image folder with metadata.jsonl and saving a DDPMPipeline, like the diffusers
train_unconditional example. Architecture and schedule as configs/tiny.yaml."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--train_data_dir", required=True)
parser.add_argument("--output_dir", required=True)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--width", type=int, default=8)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--lora_base", help="train a LoRA (peft folder) on this DDPMPipeline instead of a full model")
args = parser.parse_args()
if args.fail:
    raise SystemExit("out of GPU memory (pretend)")

import numpy as np  # noqa: E402 - after the arguments, as scripts often do (a failing run fails fast)
import torch  # noqa: E402
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from PIL import Image  # noqa: E402

torch.manual_seed(args.seed)
torch.set_num_threads(1)
root = Path(args.train_data_dir)
meta = root / "metadata.jsonl"
if meta.is_file():
    names = [json.loads(line)["file_name"] for line in meta.read_text().splitlines() if line]
else:
    names = sorted(p.name for p in root.glob("*.png"))
x = torch.tensor(np.stack([np.asarray(Image.open(root / n), dtype=np.float32) for n in names]))[:, None] / 127.5 - 1
print(f"{len(x)} images of {tuple(x.shape[1:])}")
unet = None
if args.lora_base:
    from peft import LoraConfig, get_peft_model

    unet = UNet2DModel.from_pretrained(args.lora_base, subfolder="unet")
    unet = get_peft_model(unet, LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
unet = unet or UNet2DModel(
    sample_size=x.shape[-1],
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(args.width, 2 * args.width),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=None,
)
scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, clip_sample=True)
optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=2e-3)
for step in range(args.steps):
    batch = x[torch.randint(0, len(x), (16,))]
    noise = torch.randn_like(batch)
    t = torch.randint(0, 1000, (len(batch),))
    loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(batch, noise, t), t).sample, noise)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    optimizer.step()
    if step % 50 == 0:
        print(f"step {step} loss {loss.item():.4f}")
if args.lora_base:
    unet.save_pretrained(args.output_dir)  # adapter_config.json + adapter_model.safetensors
else:
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(args.output_dir, safe_serialization=True)
