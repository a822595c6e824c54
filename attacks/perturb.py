"""Caption perturbers for SD-MIA's three text views (arXiv 2605.27020):

- token view: rephrase, keeping subject and style (similarity to the original >= 0.9);
- style view: add one or two style modifiers only (>= 0.8);
- semantic view: change the subject, keep the style (>= 0.6).

Similarity is the cosine of character-trigram count vectors (our choice: deterministic and offline; the paper's floors
are stated for its own text similarity). `RulePerturber` is offline and deterministic: it tries candidate rewrites in a
seeded order and keeps the first that meets the floor (else the closest, counted as a miss). `LLMPerturber` asks an
OpenAI-compatible chat endpoint (base URL and model from the config, key from an environment variable), checks the
floor, and falls back to the rules when the reply misses it or the call fails; both outcomes are counted.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.error
import urllib.request
from collections import Counter
import numpy as np

FLOORS = {"token": 0.9, "style": 0.8, "semantic": 0.6}
STYLE_MODIFIERS = ["sketch", "ink", "bold", "faded", "pencil", "chalk", "bright", "dark", "smooth", "rough"]
SUBJECT_GROUPS = [
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
]
GENERIC_SUBJECTS = ["cat", "dog", "house", "tree", "car", "flower", "bird", "boat"]
STOP = {"a", "an", "the", "of", "in", "on", "with", "and", "at", "to"}
SYNONYMS = {"large": "big", "big": "large", "small": "little", "little": "small", "thick": "heavy", "thin": "light",
            "upright": "straight", "photo": "picture", "picture": "photo", "regular": "normal", "medium": "mid-sized"}


def trigram_similarity(a: str, b: str) -> float:
    def grams(s: str) -> Counter:
        s = f"  {s.lower()} "
        return Counter(s[i : i + 3] for i in range(len(s) - 2))

    ga, gb = grams(a), grams(b)
    dot = sum(ga[k] * gb[k] for k in ga)
    norm = (sum(v * v for v in ga.values()) * sum(v * v for v in gb.values())) ** 0.5
    return dot / norm if norm else 0.0


class RulePerturber:
    name = "rules"

    def __init__(self, seed: int = 0, floors: dict[str, float] | None = None, tries: int = 20):
        self.seed, self.floors, self.tries = seed, dict(floors or FLOORS), tries
        self.stats = Counter()

    def candidates(self, caption: str, view: str, rng: random.Random) -> list[str]:
        words = caption.split()
        out = []
        for _ in range(self.tries):
            w = list(words)
            if view == "token":
                pairs = [i for i in range(len(w) - 2) if w[i].lower() not in STOP and w[i + 1].lower() not in STOP]
                if rng.random() < 0.5 and pairs:  # swap two neighbouring modifiers (never the subject, last)
                    i = rng.choice(pairs)
                    w[i], w[i + 1] = w[i + 1], w[i]
                else:  # one synonym
                    options = [i for i, x in enumerate(w) if x.lower() in SYNONYMS]
                    if options:
                        i = rng.choice(options)
                        w[i] = SYNONYMS[w[i].lower()]
            elif view == "style":
                for mod in rng.sample(STYLE_MODIFIERS, rng.choice([1, 2])):
                    w.insert(rng.randrange(1, len(w) + 1) if len(w) > 1 else len(w), mod)
            elif view == "semantic":
                idx = [i for i, x in enumerate(w) if any(x.lower() in g for g in SUBJECT_GROUPS)]
                i = idx[-1] if idx else len(w) - 1
                group = next((g for g in SUBJECT_GROUPS if w[i].lower() in g), GENERIC_SUBJECTS)
                w[i] = rng.choice([s for s in group if s != w[i].lower()])
            else:
                raise ValueError(f"unknown view {view!r}; known: {', '.join(FLOORS)}")
            out.append(" ".join(w))
        return out

    def perturb(self, caption: str, view: str, key: int = 0) -> str:
        digest = hashlib.sha256(f"{self.seed}|{key}|{view}|{caption}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))  # stable across processes, unlike hash()
        floor = self.floors[view]
        best, best_sim = caption, -1.0
        for cand in self.candidates(caption, view, rng):
            if cand == caption:
                continue
            sim = trigram_similarity(caption, cand)
            if sim >= floor:
                self.stats[f"{view}_met"] += 1
                return cand
            if sim > best_sim:
                best, best_sim = cand, sim
        self.stats[f"{view}_missed_floor"] += 1
        return best


INSTRUCTIONS = {
    "token": "Rephrase this image caption with different wording, keeping its subject and style exactly.",
    "style": "Add one or two style modifiers to this image caption and change nothing else.",
    "semantic": "Change the subject of this image caption to a different one and keep its style words.",
}


class LLMPerturber:
    name = "llm"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 30.0, seed: int = 0,
                 floors: dict[str, float] | None = None):
        self.base_url, self.model, self.timeout = base_url.rstrip("/"), model, timeout
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.fallback = RulePerturber(seed, floors)
        self.floors = self.fallback.floors
        self.stats = Counter()

    def ask(self, caption: str, view: str) -> str:
        body = json.dumps({
            "model": self.model, "temperature": 0,
            "messages": [{"role": "system", "content": "Reply with the rewritten caption only."},
                         {"role": "user", "content": f"{INSTRUCTIONS[view]}\nCaption: {caption}"}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            reply = json.loads(resp.read().decode())
        return str(reply["choices"][0]["message"]["content"]).strip().strip('"')

    def perturb(self, caption: str, view: str, key: int = 0) -> str:
        try:
            rewrite = self.ask(caption, view)
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError, TimeoutError):
            self.stats[f"{view}_llm_failed"] += 1
            return self.fallback.perturb(caption, view, key)
        if rewrite and rewrite != caption and trigram_similarity(caption, rewrite) >= self.floors[view]:
            self.stats[f"{view}_llm_met"] += 1
            return rewrite
        self.stats[f"{view}_llm_missed_floor"] += 1
        return self.fallback.perturb(caption, view, key)


def top_percent_mean(similarities: np.ndarray, percent: float) -> np.ndarray:
    """Mean of the top `percent`% of each row (at least one value)."""
    k = max(1, int(round(similarities.shape[1] * percent / 100.0)))
    return np.sort(similarities, axis=1)[:, -k:].mean(1)

