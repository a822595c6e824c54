"""Caption perturbers for SD-MIA's three text views (arXiv 2605.27020; rules and examples after the official
wanghl21/SD-MIA src/perturb_captions_gpt.py):

- token view: rephrase, keeping subject and style (similarity to the original >= 0.9);
- style view: add one or two style modifiers only (>= 0.8);
- semantic view: change the subject, keep the style (>= 0.6).

Similarity is measured by a `TextSimilarity`: the cosine of a local CLIP text model's embeddings when the attack has
one (`text_features_path`), else the cosine of character-trigram counts, a labelled offline fallback (the paper's
floors are stated for an embedding similarity). With a closed-vocabulary target (the digits text targets' word-level
tokenizer), both perturbers only use words the target's tokenizer knows: a rewrite with an unknown word would reach
the model as [UNK], deleting an attribute instead of rewriting it.

`RulePerturber` is offline and deterministic: it tries candidate rewrites in a seeded order and keeps the first that
meets the floor (else the closest, counted as a miss). `LLMPerturber` asks an OpenAI-compatible chat endpoint (base URL
and model from the config, key from an environment variable) with per-view rules and two examples, retries up to three
times when the rewrite is unchanged, under its floor or uses unknown words, and then gives up on that image (returns
None): the attack drops it and records its id, never silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import urllib.parse
from collections import Counter
from typing import Callable, Optional

import numpy as np

from diffmia.core.config import ConfigError
from diffmia.targets.captions import DIGIT_NAMES, STYLE_WORDS
from diffmia.targets.captions import SYNONYMS as CAPTION_SYNONYMS

FLOORS = {"token": 0.9, "style": 0.8, "semantic": 0.6}
# the digits captions' own style words and synonyms first (targets/captions.py), then generic ones
STYLE_MODIFIERS = STYLE_WORDS + ["photorealistic", "cinematic", "watercolor", "cartoon", "charcoal", "digital art"]
SUBJECT_GROUPS = [
    DIGIT_NAMES,
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
]
GENERIC_SUBJECTS = ["cat", "dog", "house", "tree", "car", "flower", "bird", "boat"]
STOP = {"a", "an", "the", "of", "in", "on", "with", "and", "at", "to"}
NOUNS = {"digit", "photo", "picture", "image"}  # never swapped: a token rewrite reorders modifiers only
SYNONYM_SETS = list(CAPTION_SYNONYMS.values()) + [["photo", "picture"]]
SYNONYMS = {w: [o for o in group if o != w] for group in SYNONYM_SETS for w in group}
WORD = re.compile(r"[\w'-]+|[^\w\s]")


def trigram_similarity(a: str, b: str) -> float:
    def grams(s: str) -> Counter:
        s = f"  {s.lower()} "
        return Counter(s[i : i + 3] for i in range(len(s) - 2))

    ga, gb = grams(a), grams(b)
    dot = sum(ga[k] * gb[k] for k in ga)
    norm = (sum(v * v for v in ga.values()) * sum(v * v for v in gb.values())) ** 0.5
    return dot / norm if norm else 0.0


class TextSimilarity:
    """sim(a, b) in [-1, 1] with a label for the score file. `embed` maps texts to vectors (a CLIP text model);
    without it, character trigrams (labelled as the fallback)."""

    def __init__(self, embed: Optional[Callable[[list[str]], "np.ndarray"]] = None, label: str = ""):
        self.embed = embed
        self.label = label or (
            "text-model embedding cosine" if embed else "character-trigram cosine (fallback: no text model)"
        )
        self._cache: dict[str, np.ndarray] = {}

    def vector(self, text: str) -> np.ndarray:
        if text not in self._cache:
            v = np.asarray(self.embed([text]), dtype=np.float64).reshape(-1)
            self._cache[text] = v / max(np.linalg.norm(v), 1e-12)
        return self._cache[text]

    def __call__(self, a: str, b: str) -> float:
        if self.embed is None:
            return trigram_similarity(a, b)
        return float(self.vector(a) @ self.vector(b))


def known(text: str, vocabulary: set[str] | None) -> bool:
    """Every word of `text` is in the target's vocabulary (always true for an open vocabulary)."""
    return vocabulary is None or all(w in vocabulary for w in WORD.findall(text.lower()))


class RulePerturber:
    name = "rules"

    def __init__(
        self,
        seed: int = 0,
        floors: dict[str, float] | None = None,
        tries: int = 30,
        vocabulary: set[str] | None = None,
        similarity: TextSimilarity | None = None,
    ):
        self.seed, self.floors, self.tries = seed, dict(floors or FLOORS), tries
        self.vocabulary = vocabulary
        self.similarity = similarity or TextSimilarity()
        self.stats = Counter()

    def _allowed(self, options: list[str]) -> list[str]:
        return [o for o in options if known(o, self.vocabulary)]

    def candidates(self, caption: str, view: str, rng: random.Random) -> list[str]:
        words = caption.split()
        out = []
        for _ in range(self.tries):
            w = list(words)
            if view == "token":  # one or two synonyms, or two neighbouring modifiers swapped (never the subject)
                for _change in range(rng.choice([1, 2])):
                    options = [i for i, x in enumerate(w) if self._allowed(SYNONYMS.get(x.lower(), []))]
                    fixed = STOP | NOUNS | {s for g in SUBJECT_GROUPS for s in g}
                    pairs = [
                        i
                        for i in range(len(w) - 1)
                        if w[i].lower() not in fixed
                        and w[i + 1].lower() not in fixed
                        and not w[i].endswith(",")
                        and not w[i + 1].endswith(",")
                    ]
                    if pairs and (rng.random() < 0.4 or not options):
                        i = rng.choice(pairs)
                        w[i], w[i + 1] = w[i + 1], w[i]
                    elif options:
                        i = rng.choice(options)
                        w[i] = rng.choice(self._allowed(SYNONYMS[w[i].lower()]))
                text = " ".join(w)
            elif view == "style":  # one or two style modifiers, in one of the official examples' positions
                mods = self._allowed(STYLE_MODIFIERS)
                if not mods:
                    break
                chosen = rng.sample(mods, min(len(mods), rng.choice([1, 2])))
                style = " and ".join(chosen) if known("and", self.vocabulary) else chosen[0]
                forms = [
                    f"{caption}, {style}",
                    f"{caption}, in {style} style",
                    f"{style} image of {caption}",
                    f"{style}, {caption}",
                ]
                text = rng.choice(self._allowed(forms) or forms)
            elif view == "semantic":  # another subject of the same kind, everything else kept
                idx = [i for i, x in enumerate(w) if any(x.lower() in g for g in SUBJECT_GROUPS)]
                i = idx[-1] if idx else len(w) - 1
                group = next((g for g in SUBJECT_GROUPS if w[i].lower() in g), GENERIC_SUBJECTS)
                options = self._allowed([s for s in group if s != w[i].lower()])
                if not options:
                    break
                w[i] = rng.choice(options)
                text = " ".join(w)
            else:
                raise ValueError(f"unknown view {view!r}; known: {', '.join(FLOORS)}")
            if known(text, self.vocabulary):
                out.append(text)
        return out

    def perturb(self, caption: str, view: str, key: int = 0) -> str:
        digest = hashlib.sha256(f"{self.seed}|{key}|{view}|{caption}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))  # stable across processes, unlike hash()
        floor = self.floors[view]
        best, best_sim = caption, -2.0
        for cand in self.candidates(caption, view, rng):
            if cand == caption:
                continue
            sim = self.similarity(caption, cand)
            if sim >= floor:
                self.stats[f"{view}_met"] += 1
                return cand
            if sim > best_sim:
                best, best_sim = cand, sim
        self.stats[f"{view}_missed_floor"] += 1
        return best


INSTRUCTIONS = {
    "token": (
        "Rephrase the image caption below. Keep its subject, every attribute and any style words exactly; change only "
        "wording, word order or small phrasing.\n"
        "Rules: 1) no new objects, subjects or styles; 2) the meaning stays true to the original; "
        "3) reply with the new caption only, no quotes.\n"
        "Examples:\n- 'photorealistic, a cat on a chair' -> 'photorealistic, a cat sitting on a chair'\n"
        "- 'a large thick upright digit seven' -> 'a big bold upright digit seven'"
    ),
    "style": (
        "Add one or two style modifiers (such as 'pencil', 'watercolor', 'cinematic', 'digital art') before, after or "
        "within the image caption below, and change nothing else.\n"
        "Rules: 1) the subject and its attributes stay exactly as they are; 2) one or two modifiers, not more; "
        "3) reply with the new caption only, no quotes.\n"
        "Examples:\n- 'a cat on a chair' -> 'photorealistic, a cat on a chair'\n"
        "- 'a small thin digit two' -> 'a small thin digit two, in pencil'"
    ),
    "semantic": (
        "Change the subject of the image caption below to a different one of the same kind, and keep its style words "
        "and format.\n"
        "Rules: 1) the subject must differ; 2) keep style modifiers if there are any; 3) reply with the new caption "
        "only, no quotes.\n"
        "Examples:\n- 'oil painting of mountains' -> 'oil painting of an ocean'\n"
        "- 'a large thick upright digit seven' -> 'a large thick upright digit four'"
    ),
}


LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
REPLY_MAX_BYTES = 1 << 20


def check_endpoint(base_url: str) -> urllib.parse.SplitResult:
    """An LLM endpoint diffmia may send captions (and an API key) to: https, or http on this machine only."""
    parts = urllib.parse.urlsplit(base_url)
    local = parts.hostname in LOCAL_HOSTS or (parts.hostname or "").startswith("127.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"llm_base_url {base_url[:100]!r}: not an http(s) URL")
    if parts.scheme == "http" and not local:
        raise ConfigError(
            f"llm_base_url {base_url[:100]!r}: plain http to another machine would send the captions "
            f"and the API key in the clear; use https (http only for localhost)"
        )
    return parts


def post_json(url: str, body: bytes, headers: dict[str, str], deadline: float, max_bytes: int = REPLY_MAX_BYTES):
    """POST and parse a JSON reply with http.client, which follows no redirect (the Authorization header goes to the
    configured host and nowhere else: a 3xx is an error), reads at most `max_bytes`, and is cut off when `deadline`
    seconds have passed in all (a server that drips one byte a second cannot hold it longer)."""
    import http.client
    import socket
    import ssl
    import threading

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=deadline, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=deadline)
    expired = threading.Event()
    sockets = []

    def cut_off():  # wakes a blocked read: http.client hands the socket to the response, so it is kept here
        expired.set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline, cut_off)
    timer.start()
    try:
        conn.connect()
        sockets.append(conn.sock)
        if expired.is_set():
            cut_off()
        conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}" + (" (redirects are not followed)" if 300 <= resp.status < 400 else ""))
        data = resp.read(max_bytes + 1)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no complete reply within {deadline:g} s") from None
        raise OSError(str(exc)) from None
    finally:
        timer.cancel()
        conn.close()
    if expired.is_set():
        raise TimeoutError(f"no complete reply within {deadline:g} s")
    if len(data) > max_bytes:
        raise ValueError(f"reply over {max_bytes} bytes")
    return json.loads(data.decode())


class LLMPerturber:
    """Rewrites through an OpenAI-compatible chat endpoint: https (http for localhost only), no redirects followed,
    each request cut off at `timeout` seconds in all, replies capped at 1 MB, `backoff` * 2^k seconds between the
    three attempts."""

    name = "llm"
    attempts = 3

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 30.0,
        seed: int = 0,
        floors: dict[str, float] | None = None,
        vocabulary: set[str] | None = None,
        similarity: TextSimilarity | None = None,
        backoff: float = 1.0,
    ):
        check_endpoint(base_url)
        self.base_url, self.model, self.timeout, self.seed = base_url.rstrip("/"), model, timeout, seed
        self.backoff = backoff
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.floors = dict(floors or FLOORS)
        self.vocabulary = vocabulary
        self.similarity = similarity or TextSimilarity()
        self.stats = Counter()

    def ask(self, caption: str, view: str, attempt: int) -> str:
        words = ""
        if self.vocabulary is not None:
            words = "\nUse only these words: " + ", ".join(
                sorted(w for w in self.vocabulary if w.isalpha() or "-" in w)
            )
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0 if attempt == 0 else 1.0,
                "seed": self.seed + attempt,
                "messages": [
                    {"role": "system", "content": INSTRUCTIONS[view] + words},
                    {"role": "user", "content": f"Original caption: {caption}\nNew caption:"},
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        reply = post_json(f"{self.base_url}/chat/completions", body, headers, self.timeout)
        return str(reply["choices"][0]["message"]["content"]).strip().strip('"').strip("'")

    def perturb(self, caption: str, view: str, key: int = 0) -> str | None:
        """The rewrite, or None when three attempts gave nothing usable (the attack then drops the image)."""
        for attempt in range(self.attempts):
            try:
                rewrite = self.ask(caption, view, attempt)
            except (OSError, KeyError, IndexError, TypeError, ValueError, TimeoutError):
                self.stats[f"{view}_llm_failed"] += 1
                if attempt + 1 < self.attempts and self.backoff:
                    time.sleep(self.backoff * 2**attempt)
                continue
            if not rewrite or rewrite == caption:
                self.stats[f"{view}_llm_unchanged"] += 1
            elif not known(rewrite, self.vocabulary):
                self.stats[f"{view}_llm_unknown_words"] += 1
            elif self.similarity(caption, rewrite) < self.floors[view]:
                self.stats[f"{view}_llm_missed_floor"] += 1
            else:
                self.stats[f"{view}_llm_met"] += 1
                return rewrite
        self.stats[f"{view}_gave_up"] += 1
        return None


def top_percent_mean(similarities: np.ndarray, percent: float) -> np.ndarray:
    """Mean of the top floor(N * percent / 100) values of each row, at least one (the official top-K%: K = 10% of
    N = 10 keeps the best one)."""
    k = max(1, int(np.floor(similarities.shape[1] * percent / 100.0 + 1e-9)))
    return np.sort(similarities, axis=1)[:, -k:].mean(1)
