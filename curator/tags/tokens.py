"""Exact CLIP BPE token counting in pure Python (no transformers import).

The vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` as shipped by open-clip-torch (MIT, see
``curator/data/clip/LICENSE-open_clip.txt``). Counting follows Hugging Face's ``CLIPTokenizer`` (the tokenizer
kohya sd-scripts and A1111 use for SD1.x/SD2.x/SDXL): text NFC-normalised, whitespace collapsed, lower-cased,
split by CLIP's
pre-tokenisation pattern, each piece byte-encoded and BPE-merged. Counts exclude the start/end tokens; one
CLIP chunk holds 75 tokens, so kohya's ``max_token_length`` of 75/150/225 are the thresholds that matter.
"""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path

CHUNK = 75
LIMITS = (75, 150, 225)
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _merge_lines() -> list[str]:
    data = resources.files("curator.data").joinpath("clip", _VOCAB_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    return lines[1 : _N_MERGES + 1]


def vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order), identical to openai/clip-vit-large-patch14's tokenizer files."""
    merges = [_merge_pair(line) for line in _merge_lines()]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def _merge_pair(line: str) -> tuple[str, str]:
    first, second = line.split()
    return first, second


def write_hf_tokenizer_files(folder: Path | str) -> tuple[Path, Path]:
    """Write Hugging Face ``vocab.json`` and ``merges.txt`` (same ranks as openai/clip-vit-large-patch14)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary()
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return vocab_path, merges_path


# Unicode White_Space (what the Rust regex ``\s`` matches; Python's ``str.isspace`` also takes \x1c-\x1f).
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS_RUN = re.compile(f"[{_WHITESPACE}]+")
_ASCII_PAT = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\x0b\x0c\r a-z0-9]+"
)
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_SPACE_CHARS = frozenset(" \t\n\x0b\x0c\r\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


def _normalize(text: str) -> str:
    """Hugging Face CLIPTokenizer's normalizer: NFC, whitespace runs to one space, lower case."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return _WS_RUN.sub(" ", text).lower()


def _category_class(ch: str) -> str:
    if ch in _SPACE_CHARS:
        return " "
    c = unicodedata.category(ch)[0]
    if c == "L":
        return "L"
    if c == "N":
        return "N"
    return "P"


def _pieces_unicode(text: str) -> list[str]:
    """CLIP's pattern (``'s|...|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``) without the ``regex`` module."""
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        for special in ("<|startoftext|>", "<|endoftext|>"):
            if text.startswith(special, i):
                pieces.append(special)
                i += len(special)
                break
        else:
            if text[i] == "'":
                hit = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
                if hit:
                    pieces.append(hit)
                    i += len(hit)
                    continue
            cls = _category_class(text[i])
            if cls == " ":
                i += 1
            elif cls == "N":
                pieces.append(text[i])
                i += 1
            else:
                j = i + 1
                while j < n and _category_class(text[j]) == cls:
                    j += 1
                pieces.append(text[i:j])
                i = j
    return pieces


class ClipTokenizer:
    """CLIP BPE with a per-word cache (tags repeat across a dataset, so counting is mostly lookups)."""

    def __init__(self) -> None:
        self.byte_encoder = _bytes_to_unicode()
        self.ranks = {tuple(line.split()): i for i, line in enumerate(_merge_lines())}
        self.cache: dict[str, list[str]] = {
            "<|startoftext|>": ["<|startoftext|>"],
            "<|endoftext|>": ["<|endoftext|>"],
        }

    def bpe(self, token: str) -> list[str]:
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        word = list(token[:-1]) + [token[-1] + "</w>"]
        ranks = self.ranks
        while len(word) > 1:
            best = None
            best_rank = None
            for pair in zip(word, word[1:], strict=False):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def pieces(self, text: str) -> list[str]:
        text = _normalize(text)
        if text.isascii():
            return _ASCII_PAT.findall(text)
        return _pieces_unicode(text)

    def tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        enc = self.byte_encoder
        for piece in self.pieces(text):
            out.extend(self.bpe("".join(enc[b] for b in piece.encode("utf-8"))))
        return out

    def count(self, text: str) -> int:
        """Number of CLIP tokens in ``text`` (without start/end tokens)."""
        enc = self.byte_encoder
        total = 0
        for piece in self.pieces(text):
            total += len(self.bpe("".join(enc[b] for b in piece.encode("utf-8"))))
        return total


@lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def count_tokens(text: str) -> int:
    """CLIP token count of a caption's text (the first line, as kohya feeds it)."""
    return get_tokenizer().count(text)


def token_warning(count: int) -> str | None:
    """A warning when a caption is past 75 / 150 / 225 tokens (kohya's max_token_length choices)."""
    if count > 225:
        return f"{count} tokens: truncated even with --max_token_length=225"
    if count > 150:
        return f"{count} tokens: needs --max_token_length=225 (else truncated at 75/150)"
    if count > 75:
        return f"{count} tokens: past 75, truncated unless --max_token_length=150 or 225"
    return None
