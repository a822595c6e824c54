"""Text-to-image: the captioned digits target, Stable Diffusion from a local folder, SD-MIA's perturbers and LLM
endpoint, set-level inference, and every attack through the contract on a text-conditioned target."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from diffmia.attacks import ATTACKS, AttackBatch, build_attack
from diffmia.attacks.perturb import LLMPerturber, RulePerturber, trigram_similarity
from diffmia.attacks.runner import run_attack
from diffmia.core.config import ConfigError, load_config
from diffmia.evaluate.setlevel import set_level
from diffmia.targets.runs import load_run
from diffmia.targets.train import train_target
from tests.conftest import REPO, SMALL

TINY_T2I = REPO / "configs" / "tiny-t2i.yaml"


def test_text_pipeline_round_trip_and_prompts(text_run, tmp_path):
    from diffmia.targets.text import DigitsTextPipeline

    pipe = DigitsTextPipeline.from_pretrained(text_run.run.target, use_safetensors=True)
    images = pipe(
        ["a large thick upright digit seven", "a small thin left-slanted digit one"],
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert images.shape == (2, 1, 8, 8) and images.abs().max() <= 1
    pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    again = DigitsTextPipeline.from_pretrained(tmp_path / "again", use_safetensors=True)
    ids = pipe.tokenizer(["a digit seven"]).input_ids
    assert ids == again.tokenizer(["a digit seven"]).input_ids and ids[0][0] == 2 and ids[0][-1] == 3
    # the caption changes the prediction: the model is conditioned
    t = text_run.target
    x = torch.randn(1, 1, 8, 8)
    assert not torch.allclose(t.predict_noise(x, 100, ["a large digit seven"]), t.predict_noise(x, 100, [""]))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_on_a_text_target(text_run, name):
    attack = build_attack(name, SMALL.get(name), seed=1)
    ids = text_run.manifest.indices("members")[:3] + text_run.manifest.indices("nonmembers")[:3]
    caps = [text_run.images.captions[i] for i in ids]

    def batch(sl):
        return AttackBatch(text_run.images.tensor(ids[sl]), ids[sl], caps[sl])

    attack.prepare(text_run, text_run.run.root / ".cache")
    target = text_run.target
    target.queries.reset()
    out = attack.score(target, batch(slice(None)))
    assert target.queries.sample_queries == attack.queries_per_sample(target) * 6
    assert target.queries.generations == attack.generations_per_sample(target) * 6  # black-box: images generated
    assert (target.queries.generations > 0) == (attack.access == "black-box")
    first = out if torch.is_tensor(out) else torch.stack([out[c] for c in attack.components], 1)
    assert torch.isfinite(first).all() and first.shape[0] == 6
    split = [attack.score(target, batch(slice(0, 2))), attack.score(target, batch(slice(2, None)))]
    again = (
        torch.cat(split)
        if torch.is_tensor(out)
        else torch.cat([torch.stack([s[c] for c in attack.components], 1) for s in split])
    )
    assert torch.allclose(first, again, rtol=1e-4, atol=1e-5)


def test_runner_combines_components_on_calibration(text_run, tmp_path):
    result = run_attack(text_run, build_attack("sd_mia", {"generations": 2, "steps": 2}), tmp_path, progress=False)
    df = result.scores
    assert {"s_token", "s_style", "s_semantic"} <= set(df.columns) and "s_original" not in df.columns
    assert np.isfinite(df.score).all() and set(result.info["fitted"]["weights"]) == {"token", "style", "semantic"}
    assert result.info["score_mode"] == "official" and result.info["queries_per_sample"] == 3 * 2 * 2
    assert sum(v for k, v in result.info["perturbations"].items() if k.startswith("token_")) == len(df)


def test_text_attacks_refuse_unconditional_targets(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="needs a text-conditioned target"):
        run_attack(load_run(tiny_run), build_attack("clid"), tmp_path, progress=False)


def test_rule_perturber_meets_floors_and_is_deterministic():
    p = RulePerturber(seed=0)
    for caption in ["a large thick right-slanted digit seven", "a small thin upright digit one"]:
        for view in ("token", "style", "semantic"):
            out = p.perturb(caption, view, key=3)
            assert out != caption
            assert trigram_similarity(caption, out) >= p.floors[view], (caption, view, out)
            assert out == RulePerturber(seed=0).perturb(caption, view, key=3)
    assert "seven" not in p.perturb("a large thick right-slanted digit seven", "semantic")
    assert p.stats["token_met"] == 2 and not p.stats["token_missed_floor"]
    # a short caption no rewrite can keep at 0.9: the closest is used and the miss is counted
    q = RulePerturber(seed=0)
    out = q.perturb("a photo of a horse", "token")
    assert out != "a photo of a horse" and q.stats["token_missed_floor"] == 1


class StubLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers from a table (and badly for one caption)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StubLLM.seen.append((body["model"], self.headers.get("Authorization")))
        text = body["messages"][-1]["content"].split("Original caption: ")[1].split("\n")[0]
        if "bad" in text:
            reply = "completely unrelated words"
        elif "same" in text:
            reply = text
        else:
            reply = text.replace("digit", "bold digit")
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_perturber_against_a_local_stub(monkeypatch):
    StubLLM.seen = []
    server = HTTPServer(("127.0.0.1", 0), StubLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("STUB_KEY", "secret")
        p = LLMPerturber(f"http://127.0.0.1:{server.server_port}/v1", "stub-model", "STUB_KEY", timeout=5)
        assert p.perturb("a large digit seven", "style") == "a large bold digit seven"
        # under the floor three times, or unchanged three times: no rewrite (the attack drops the image), counted
        assert p.perturb("a bad digit seven", "token") is None
        assert p.perturb("the same digit seven", "token") is None
        assert p.stats["style_llm_met"] == 1 and p.stats["token_llm_missed_floor"] == 3
        assert p.stats["token_llm_unchanged"] == 3 and p.stats["token_gave_up"] == 2
        assert StubLLM.seen[0] == ("stub-model", "Bearer secret") and len(StubLLM.seen) == 7
        # a closed vocabulary: a rewrite with unknown words is refused too
        closed = LLMPerturber(
            f"http://127.0.0.1:{server.server_port}/v1", "m", vocabulary={"a", "large", "digit", "seven"}
        )
        assert closed.perturb("a large digit seven", "style") is None and closed.stats["style_llm_unknown_words"] == 3
    finally:
        server.shutdown()
    down = LLMPerturber("http://127.0.0.1:9/v1", "m", timeout=1, backoff=0)  # nothing listens: three failures
    assert down.perturb("a large digit seven", "semantic") is None and down.stats["semantic_llm_failed"] == 3


class RedirectLLM(BaseHTTPRequestHandler):
    """Answers every request with a redirect to another local server, which records what it receives."""

    target = ""

    def do_POST(self):
        self.send_response(302)
        self.send_header("Location", RedirectLLM.target)
        self.end_headers()

    def log_message(self, *args):
        pass


class DripLLM(BaseHTTPRequestHandler):
    """Sends a 200 and then one byte every 0.3 s for ever (until the client hangs up); or a 2 MB reply."""

    huge = False

    def do_POST(self):
        import time

        self.send_response(200)
        self.end_headers()
        try:
            if DripLLM.huge:
                self.wfile.write(b"[" + b"1," * (1 << 20) + b"1]")
                return
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def _serve(handler):
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_llm_perturber_never_follows_a_redirect_with_the_key(monkeypatch):
    StubLLM.seen = []
    other = _serve(StubLLM)
    redirect = _serve(RedirectLLM)
    RedirectLLM.target = f"http://127.0.0.1:{other.server_port}/v1/chat/completions"
    try:
        monkeypatch.setenv("STUB_KEY", "secret")
        p = LLMPerturber(f"http://127.0.0.1:{redirect.server_port}/v1", "m", "STUB_KEY", timeout=5, backoff=0)
        assert p.perturb("a large digit seven", "style") is None and p.stats["style_llm_failed"] == 3
        assert StubLLM.seen == []  # the other host received nothing, the bearer token least of all
    finally:
        redirect.shutdown()
        other.shutdown()


def test_llm_perturber_has_an_overall_deadline_and_a_reply_cap():
    import time

    server = _serve(DripLLM)
    try:
        p = LLMPerturber(f"http://127.0.0.1:{server.server_port}/v1", "m", timeout=1.0, backoff=0)
        t0 = time.monotonic()
        assert p.perturb("a large digit seven", "style") is None
        assert time.monotonic() - t0 < 3 * 1.0 + 1.5  # three attempts of at most 1 s each, not 30 s of dripping
        DripLLM.huge = True
        assert p.perturb("a large digit seven", "token") is None and p.stats["token_llm_failed"] == 3
    finally:
        DripLLM.huge = False
        server.shutdown()


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://llm.example.com/v1", "plain http to another machine"),
        ("ftp://127.0.0.1/v1", r"not an http\(s\) URL"),
    ],
)
def test_llm_endpoint_must_be_https_unless_local(url, message):
    from diffmia.core.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        LLMPerturber(url, "m")


def test_set_level_grows_with_set_size():
    rng = np.random.default_rng(0)
    n = 400
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    split = np.array((["calibration"] * (n // 2) + ["test"] * (n // 2)) * 2)
    scores = np.where(is_member, rng.normal(0.5, 1, 2 * n), rng.normal(0, 1, 2 * n))  # a weak per-image signal
    rows = set_level(is_member, scores, split, sizes=(1, 10, 30), sets=200)
    aucs = [r["auc"] for r in rows]
    assert aucs[0] < aucs[1] < aucs[2] and aucs[2] > 0.85
    assert rows[2]["median_p_value"] < rows[0]["median_p_value"]


def tiny_vae():
    """A random 2-level KL VAE for 8 x 8 RGB images (4 x 4 latents), as the tiny SD and SDXL folders use."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    )


def make_tiny_sd(folder, captions):
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from diffmia.targets.text import build_text_encoder, build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(captions, 12)
    text = build_text_encoder(len(tokenizer), 16, 1, 2, 12)
    unet = UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vae = tiny_vae()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)


def tiny_sd_recipe(tmp_path, defenses: str, images: int = 24, steps: int = 4):
    """A tiny random Stable Diffusion folder and a recipe fine-tuning it on a tiny captioned image folder."""
    from tests.targets.test_data import make_imagefolder

    data = make_imagefolder(tmp_path / "imgs", n=images, size=(16, 16))
    captions = [json.loads(x)["text"] for x in (data / "metadata.jsonl").read_text().splitlines()]
    make_tiny_sd(tmp_path / "sd", captions)
    return fine_tune_recipe("stable-diffusion", tmp_path / "sd", data, defenses, steps)


def fine_tune_recipe(kind: str, pretrained, data, defenses: str, steps: int):
    """The tiny text recipe fine-tuning the pretrained folder of `kind` on the captioned image folder `data`."""
    return load_config(
        TINY_T2I,
        [
            f"model.kind={kind}",
            f"model.pretrained={pretrained}",
            "data.dataset=imagefolder",
            f"data.path={data}",
            "data.resolution=8",
            "data.members=8",
            "data.nonmembers=8",
            f"train.steps={steps}",
            f"defenses={defenses}",
        ],
    )


@pytest.mark.parametrize("defenses", ["[]", "[{name: lora, rank: 2}]"])
def test_stable_diffusion_from_local_folder(tmp_path, defenses):
    cfg = tiny_sd_recipe(tmp_path, defenses)
    run = train_target(cfg, tmp_path / "run", progress=False)
    loaded = load_run(run.root)
    assert type(loaded.target).__name__ == "LatentTextTarget" and loaded.target.latent
    z = loaded.target.encode(loaded.images.tensor([0, 1], 8))
    assert z.shape == (2, 4, 4, 4)  # attacks run on VAE latents
    result = run_attack(loaded, build_attack("noise_aggregation", {"k": 3}), tmp_path / "scores", progress=False)
    assert len(result.scores) == 16 and np.isfinite(result.scores.score).all()
    images = loaded.target.generate(2, ["picture number 1", "picture number 2"], steps=2, guidance_scale=2.0)
    assert images.shape == (2, 3, 8, 8)
    if "lora" in defenses:
        assert (run.root / "adapter" / "adapter_model.safetensors").is_file()


def test_missing_stable_diffusion_folder_is_a_clear_error(tmp_path):
    from diffmia.targets.denoiser import ModelError

    cfg = load_config(TINY_T2I, ["model.kind=stable-diffusion", f"model.pretrained={tmp_path / 'nope'}"])
    with pytest.raises(ModelError, match="not a local diffusers pipeline folder"):
        train_target(cfg, tmp_path / "run", progress=False)


def test_cli_samples_a_text_target_from_prompts(text_run, tmp_path, tiny_run):
    from typer.testing import CliRunner

    from diffmia.cli import app

    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "sample",
            str(text_run.run.root),
            "--n",
            "4",
            "--steps",
            "2",
            "--prompt",
            "a large digit seven",
            "--out",
            str(tmp_path / "g.png"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["sample", str(tiny_run), "--prompt", "a digit", "--out", str(tmp_path / "h.png")])
    assert bad.exit_code == 2 and "unconditional target" in bad.output


def make_tiny_captioner(folder, words):
    """A random-weight BLIP with a word vocabulary, its logits nudged off the special tokens so it writes words."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import BlipImageProcessor as ImageProcessor
    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=16,
            patch_size=8,
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=4,
            encoder_hidden_size=32,
            bos_token_id=2,
            sep_token_id=3,
            eos_token_id=3,
            pad_token_id=0,
            max_position_embeddings=32,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(cfg)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[:5] = -100.0
    model.save_pretrained(folder)
    BlipProcessor(
        image_processor=ImageProcessor(size={"height": 16, "width": 16}),
        tokenizer=BertTokenizer(str(folder / "vocab.txt")),
    ).save_pretrained(folder)


def make_tiny_clip_text(folder, captions):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from diffmia.targets.text import build_tokenizer

    tokenizer = build_tokenizer(captions, 16)
    torch.manual_seed(0)
    CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            projection_dim=8,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_sd_mia_with_a_local_captioner_and_text_features(text_run, tmp_path):
    from diffmia.targets.text import words

    captions = list(text_run.images.captions)
    vocab = sorted({w for c in captions for w in words(c)})
    make_tiny_captioner(tmp_path / "blip", vocab)
    make_tiny_clip_text(tmp_path / "clip-text", captions)
    with pytest.raises(ConfigError, match="captioner_path needs text_features_path"):
        build_attack("sd_mia", {"captioner_path": str(tmp_path / "blip")})
    missing = build_attack(
        "sd_mia", {"captioner_path": str(tmp_path / "nope"), "text_features_path": str(tmp_path / "clip-text")}
    )
    with pytest.raises(ConfigError, match="config.json missing"):
        missing.prepare(text_run, tmp_path / "cache")

    ids = text_run.manifest.indices("members")[:3] + text_run.manifest.indices("nonmembers")[:3]
    batch = AttackBatch(text_run.images.tensor(ids), ids, [captions[i] for i in ids])
    small = {"generations": 2, "steps": 2, "text_features_path": str(tmp_path / "clip-text")}

    def scores(params):
        attack = build_attack("sd_mia", params, seed=1)
        attack.prepare(text_run, text_run.run.root / ".cache")
        out = attack.score(text_run.target, batch)
        scores.last = attack
        return torch.stack([out[c] for c in attack.components], 1), attack.extra_info()

    own, own_info = scores(small)
    capt, capt_info = scores({**small, "captioner_path": str(tmp_path / "blip")})
    assert own_info["similarity"] == "image features only" and capt_info["similarity"].startswith("image features +")
    assert capt_info["rewrite_similarity"].startswith("CLIP text embedding cosine")
    examples = [{"prompt": a, "captioner": b} for a, b in scores.last.caption_examples]
    assert "caption_examples" not in capt_info and capt_info["captioned_images"] > 0  # no caption in the score JSON
    assert examples and all(e["captioner"] and set(words(e["captioner"])) <= set(vocab) for e in examples)
    assert torch.isfinite(capt).all()
    # the captions of x and x' enter the similarity: it differs from the image features' cosine alone
    assert not torch.allclose(own, capt)
    again, _ = scores({**small, "captioner_path": str(tmp_path / "blip")})
    assert torch.equal(again, capt)  # greedy decoding: deterministic
    # CLIP image features from a local folder in place of the digits classifier
    from tests.evaluate.test_utility import save_tiny_clip

    save_tiny_clip(tmp_path / "clip-vision")
    clip, _ = scores({**small, "image_features": "clip", "image_features_path": str(tmp_path / "clip-vision")})
    assert torch.isfinite(clip).all() and not torch.allclose(clip, own)
    with pytest.raises(ConfigError, match="needs image_features_path"):
        build_attack("sd_mia", {"image_features": "clip"})
