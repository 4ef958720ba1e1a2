"""Spoken utterances from the espeak-ng formant synthesizer: a built-in corpus of real words.

The synthetic generator (:mod:`sepkit.data.synth`) makes speech-like sounds; models trained on
them do nothing to real speech. This corpus has what they lack (phonetics, coarticulation,
rhythm and intonation of English sentences) and still needs nothing downloaded: random sentences
from the word list shipped with sepkit (``spoken_words.txt``) are spoken by ``espeak-ng``, a
system program (``apt-get install espeak-ng``), then mixed exactly as the synthetic sources are
(:func:`sepkit.data.synth.mix_utterances`: levels, noise, reverberation, peak limit).

Every utterance draws its voice: one of 8 English accents, one of 60 voice variants (43 male, 17
female; the Klatt ones use espeak-ng's other synthesis method), base pitch, pitch range
(intonation), speaking rate, word gap, and a vocal-tract scale (the 22050 Hz output is read as
if sampled at ``22050 * scale`` Hz, moving f0 and formants together by ``scale``). A speaker is an
accent + variant pair; the validation and test splits use 10 variants that training never hears.

Utterances are rendered once per split into a cache folder (``audio.npy``: int16 samples of
every utterance end to end, memory-mapped; ``index.json``: offsets, texts, voices) named by a
hash of everything that determines them (seed, split, size, rate, the synthesizer's version),
so the same seed gives the same utterances and mixtures. The synthesizer is called through its
command line, one process per utterance: it is the interface every packaged version has (the
C library's API and ABI vary between releases), rendering parallelizes over processes with
no shared state, and a crash of the synthesizer cannot take the training process with it; a
process start costs about 10 ms, against about a second of CPU per second of a training step.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sepkit.errors import AudioError, DependencyError, InputError

from .audio import resample
from .synth import MixtureSpec, mix_utterances, split_code

__all__ = [
    "SYNTHESIZER", "INSTALL_HINT", "Utterance", "find_synthesizer", "synthesizer_version", "vocabulary",
    "random_sentence", "draw_utterances", "render", "default_cache", "SpokenCorpus", "SpokenMixtures",
]

SYNTHESIZER = "espeak-ng"
INSTALL_HINT = ("install the espeak-ng speech synthesizer: apt-get install espeak-ng (Debian, Ubuntu), "
                "dnf install espeak-ng (Fedora), brew install espeak-ng (macOS)")
NATIVE_RATE = 22050  # espeak-ng's output rate (Hz)
FORMAT = 1  # version of the cache layout and of the rendering below; part of every cache key

ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# espeak-ng's human-sounding variants (robotic, echoing, whispered and child voices left out)
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis", "Diogo", "Gene", "Gene2",
        "Henrique", "Hugo", "Jacky", "Lee", "Mario", "Michael", "Mike", "adam", "antonio", "benjamin", "boris",
        "david", "ed", "edward", "gustave", "iven", "iven3", "kaukovalta", "klatt", "klatt2", "klatt3",
        "marcelo", "max", "miguel", "paul", "pedro", "quincy", "robert", "travis")
FEMALE = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "linda",
          "steph", "steph2", "steph3", "shelby", "grandma")
# heard only in validation and test
HELD_OUT = frozenset({"m3", "m7", "Gene", "Michael", "edward", "klatt2", "paul", "f2", "steph", "Andrea"})


@dataclass(frozen=True)
class Utterance:
    """One utterance to render.

    Attributes:
        text: the sentence(s).
        accent: espeak-ng voice (``en-us``, ``en-gb-scotland``, ...).
        variant: voice variant (``m3``, ``f2``, ``klatt``, ...).
        female: the variant's voice class.
        pitch: base pitch, espeak-ng's 0..99 scale (50: the variant's own).
        pitch_range: intonation range, percent of the variant's (SSML prosody range).
        rate: words per minute.
        word_gap: extra pause between words (units of 10 ms).
        scale: vocal-tract scale: f0 and formants multiplied, duration divided by it.
    """

    text: str
    accent: str
    variant: str
    female: bool
    pitch: int
    pitch_range: int
    rate: int
    word_gap: int
    scale: float

    @property
    def speaker(self) -> str:
        return f"{self.accent}+{self.variant}"

    def command(self, program: str) -> list[str]:
        """The espeak-ng command line that writes this utterance as a WAV file to stdout."""
        voice = f"{self.accent}+{self.variant}"
        text = (self.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        ssml = f'<speak><prosody range="{self.pitch_range}%">{text}</prosody></speak>'
        return [program, "--stdout", "-m", "-z", "-v", voice, "-p", str(self.pitch), "-s", str(self.rate),
                "-g", str(self.word_gap), ssml]


def find_synthesizer() -> str:
    """The path of ``espeak-ng`` on ``PATH``; DependencyError saying how to install it otherwise."""
    path = shutil.which(SYNTHESIZER)
    if path is None:
        raise DependencyError(f"the spoken corpus (data.dataset=spoken) needs {SYNTHESIZER}, which is not on PATH; "
                              f"{INSTALL_HINT}")
    return path


@lru_cache(maxsize=8)
def synthesizer_version(program: str) -> str:
    """The first line of ``espeak-ng --version`` (part of the cache key: another version speaks
    differently)."""
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise DependencyError(f"{program} --version failed ({type(exc).__name__}); {INSTALL_HINT}") from None
    return out.strip().splitlines()[0] if out.strip() else "unknown"


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, tuple]:
    """The shipped word list by class: ``noun``, ``adjective``, ``adverb``, ``name``, ``place``
    (tuples of words) and ``verb`` (tuples of ``(base, past)``)."""
    text = resources.files("sepkit.data").joinpath("spoken_words.txt").read_text(encoding="utf-8")
    classes: dict[str, list] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = classes.setdefault(m.group(1), [])
            continue
        current.extend(line.split())
    verbs = classes.pop("verb")
    out = {k: tuple(v) for k, v in classes.items()}
    out["verb"] = tuple(zip(verbs[0::2], verbs[1::2]))
    return out


_DETERMINERS = ("the", "the", "the", "a", "this", "that", "my", "your", "his", "her", "our", "their", "every", "one")
_PRONOUNS = ("I", "you", "he", "she", "we", "they")
_PREPOSITIONS = ("in", "on", "at", "near", "under", "behind", "with", "from", "to", "for", "over", "after", "before",
                 "into", "across", "beside")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty", "forty",
            "a hundred")
# slots: D determiner (+ optional adjective) + noun phrase pieces, N noun, A adjective, V verb (base),
# P verb (past), R adverb, S pronoun, M name, L place, I preposition, K number + plural noun
_TEMPLATES = (
    "D A N P D N .", "M P D N I D A N .", "S R P D N , and D N P R .", "did M V D A N I L ?",
    "why did D N V D N ?", "S will V D N I D N tomorrow .", "D N was A , but D N was A .",
    "please V D A N before D N !", "when D N P , M and M P I L .", "there were K I D N .",
    "how A was D N I L ?", "S could not V D N , M said .", "M P , R , that D N was A .",
    "was D N A or A ?", "D N P K I D N and P I D N .", "S R P D N I D N .", "who P D A N ?",
    "M and S P I D N I L .", "D A N R P D N .", "what a A N !", "S P that D N was A .",
)


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    if noun in ("man", "woman"):
        return noun[:-2] + "en"
    if noun in ("child", "foot", "tooth", "mouse", "person", "leaf", "knife"):
        return {"child": "children", "foot": "feet", "tooth": "teeth", "mouse": "mice", "person": "people",
                "leaf": "leaves", "knife": "knives"}[noun]
    return noun + "s"


def random_sentence(rng: np.random.Generator) -> str:
    """One sentence from the templates above and the shipped vocabulary, e.g. ``"The quiet farmer
    painted the gate near the old bridge."``."""
    voc = vocabulary()

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    words: list[str] = []
    for slot in pick(_TEMPLATES).split():
        if slot == "D":
            det = pick(_DETERMINERS)
            if rng.random() < 0.3:
                words += [det, pick(voc["adjective"])]
            else:
                words.append(det)
        elif slot == "N":
            words.append(pick(voc["noun"]))
        elif slot == "A":
            words.append(pick(voc["adjective"]))
        elif slot == "V":
            words.append(pick(voc["verb"])[0])
        elif slot == "P":
            words.append(pick(voc["verb"])[1])
        elif slot == "R":
            words.append(pick(voc["adverb"]))
        elif slot == "S":
            words.append(pick(_PRONOUNS))
        elif slot == "M":
            words.append(pick(voc["name"]))
        elif slot == "L":
            words.append(pick(voc["place"]))
        elif slot == "I":
            words.append(pick(_PREPOSITIONS))
        elif slot == "K":
            words += [pick(_NUMBERS), _plural(pick(voc["noun"]))]
        else:
            words.append(slot)
    for i in range(len(words) - 1):  # a -> an before a vowel
        if words[i] == "a" and words[i + 1][0] in "aeiouAEIOU":
            words[i] = "an"
    text = " ".join(words)
    text = re.sub(r" ([.,?!])", r"\1", text)
    return text[0].upper() + text[1:]


def draw_utterances(n: int, split: str, seed: int) -> list[Utterance]:
    """``n`` utterances (texts and voices) drawn deterministically from ``(seed, split)``.
    Splits whose name starts with ``train`` use the training variants, the others the held-out
    ones; each utterance has one to three sentences (8 to 30 words)."""
    if n < 1:
        raise InputError(f"draw_utterances: need at least one utterance, got {n}")
    rng = np.random.default_rng([seed, split_code(split), 0x5B0C])
    train = split.startswith("train")
    pools = {sex: tuple(v for v in variants if (v in HELD_OUT) != train)
             for sex, variants in (("male", MALE), ("female", FEMALE))}
    out = []
    for _ in range(n):
        female = bool(rng.random() < 0.5)
        variants = pools["female" if female else "male"]
        sentences = [random_sentence(rng)]
        while len(" ".join(sentences).split()) < 8 or (rng.random() < 0.35 and len(sentences) < 3):
            sentences.append(random_sentence(rng))
        out.append(Utterance(
            text=" ".join(sentences),
            accent=ACCENTS[int(rng.integers(len(ACCENTS)))],
            variant=variants[int(rng.integers(len(variants)))],
            female=female,
            pitch=int(rng.integers(20, 81)),
            pitch_range=int(rng.integers(50, 201)),
            rate=int(rng.integers(125, 226)),
            word_gap=int(rng.choice([0, 0, 0, 1, 2])),
            scale=float(np.round(rng.uniform(0.9, 1.1), 3)),
        ))
    return out


def _parse_wav(data: bytes, what: str) -> np.ndarray:
    """Samples of the 16-bit mono WAV espeak-ng writes to stdout (its size fields are
    placeholders: the data run to the end)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{what}: {SYNTHESIZER} wrote no WAV data ({len(data)} bytes)")
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"fmt ":
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            bits = int.from_bytes(data[pos + 22 : pos + 24], "little")
            if (channels, rate, bits) != (1, NATIVE_RATE, 16):
                raise AudioError(f"{what}: {SYNTHESIZER} wrote {channels} channel(s), {rate} Hz, {bits} bit; "
                                 f"expected 1, {NATIVE_RATE}, 16")
        if tag == b"data":
            body = data[pos + 8 :]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
        pos += 8 + size + (size & 1)
    raise AudioError(f"{what}: no data chunk in {SYNTHESIZER}'s output")


def _trim(x: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading and trailing silence (below -50 dB of the peak), keeping 30 ms margins."""
    loud = np.flatnonzero(np.abs(x) > 10 ** (-50 / 20) * (np.abs(x).max() + 1e-12))
    if loud.size == 0:
        return x
    margin = int(0.03 * rate)
    return x[max(0, loud[0] - margin) : loud[-1] + margin + 1]


def render(utterance: Utterance, sample_rate: int, program: str | None = None) -> np.ndarray:
    """Speak ``utterance`` and return it at ``sample_rate`` Hz: float32 ``(T,)``, edges trimmed,
    RMS 0.05 over the active part (about -26 dBFS, like the synthetic sources)."""
    program = program or find_synthesizer()
    try:
        proc = subprocess.run(utterance.command(program), capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DependencyError(f"{SYNTHESIZER} failed to run ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise DependencyError(f"{SYNTHESIZER} -v {utterance.speaker} exited with {proc.returncode}"
                              f"{': ' + err[0] if err else ''}")
    x = _parse_wav(proc.stdout, f"utterance {utterance.text[:30]!r}")
    # read at 22050 * scale Hz (a multiple of 50 Hz, so the polyphase filters stay small)
    source_rate = int(round(NATIVE_RATE * utterance.scale / 50)) * 50
    y = resample(torch.from_numpy(x), source_rate, sample_rate).numpy()
    y = _trim(y, sample_rate)
    active = np.abs(y) > 1e-3 * (np.abs(y).max() + 1e-12)
    rms = float(np.sqrt(np.mean(y[active] ** 2))) if active.any() else 0.0
    if rms == 0.0:
        raise AudioError(f"{SYNTHESIZER} -v {utterance.speaker} rendered silence for {utterance.text[:40]!r}")
    y = y * (0.05 / rms)
    return np.clip(y, -1.0, 32767 / 32768).astype(np.float32)


def default_cache() -> Path:
    """``$SEPKIT_CACHE/spoken``, else ``$XDG_CACHE_HOME/sepkit/spoken``, else
    ``~/.cache/sepkit/spoken``."""
    if os.environ.get("SEPKIT_CACHE"):
        return Path(os.environ["SEPKIT_CACHE"]) / "spoken"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sepkit" / "spoken"


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (so concurrent runs render a split once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock, the atomic rename still keeps the cache whole
            pass
        yield


class SpokenCorpus:
    """The rendered utterances of one split, read from its cache folder.

    ``folder/audio.npy`` holds every utterance's int16 samples end to end (memory-mapped, so
    DataLoader workers share the pages); ``folder/index.json`` their offsets, lengths, texts
    and voices. :meth:`build` renders a split once and returns it.

    Attributes:
        folder, sample_rate, utterances (list of :class:`Utterance`), speakers (sorted ids),
        by_speaker (``{speaker: [utterance indices]}``).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._samples = None
        try:
            index = json.loads((self.folder / "index.json").read_text())
            samples = self._audio()
        except (OSError, ValueError) as exc:
            raise AudioError(f"{self.folder}: not a rendered spoken corpus ({type(exc).__name__}); "
                             "delete the folder to render it again") from None
        self.sample_rate = int(index["sample_rate"])
        self.utterances = [Utterance(**u) for u in index["utterances"]]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        if len(self.offsets) != len(self.utterances) or int(self.offsets[-1] + self.lengths[-1]) != len(samples):
            raise AudioError(f"{self.folder}: index.json does not match audio.npy; delete the folder to render it "
                             "again")
        by: dict[str, list[int]] = {}
        for i, u in enumerate(self.utterances):
            by.setdefault(u.speaker, []).append(i)
        self.speakers = sorted(by)
        self.by_speaker = by

    def _audio(self) -> np.ndarray:
        if self._samples is None:  # opened lazily: a copy sent to a worker process maps the file itself
            self._samples = np.load(self.folder / "audio.npy", mmap_mode="r")
        return self._samples

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_samples": None}

    def __len__(self) -> int:
        return len(self.utterances)

    def audio(self, index: int) -> np.ndarray:
        """Utterance ``index`` as float64 ``(T,)``."""
        o, n = int(self.offsets[index]), int(self.lengths[index])
        return np.asarray(self._audio()[o : o + n], dtype=np.float64) / 32768.0

    @staticmethod
    def key(utterances: list[Utterance], sample_rate: int, version: str) -> str:
        """Hash of everything that determines the rendered audio."""
        h = hashlib.sha256(json.dumps([FORMAT, version, sample_rate, [asdict(u) for u in utterances]]).encode())
        return h.hexdigest()[:16]

    @classmethod
    def build(cls, cache: str | os.PathLike | None, split: str, size: int, seed: int, sample_rate: int,
              progress: bool = True, workers: int | None = None) -> SpokenCorpus:
        """The corpus of ``size`` utterances of ``split`` (see :func:`draw_utterances`) at
        ``sample_rate`` Hz under ``cache`` (default :func:`default_cache`), rendered first if it
        is not there (a progress bar on stderr; ``workers`` synthesizer processes at a time,
        default the CPU count)."""
        program = find_synthesizer()
        version = synthesizer_version(program)
        utterances = draw_utterances(size, split, seed)
        root = Path(cache) if cache is not None else default_cache()
        folder = root / f"{split}-{sample_rate // 1000}k-{size}-seed{seed}-{cls.key(utterances, sample_rate, version)}"
        if (folder / "index.json").is_file():
            return cls(folder)
        with _locked(root / f".{folder.name}.lock"):
            if not (folder / "index.json").is_file():
                cls._render_into(folder, utterances, sample_rate, program, version, progress, workers)
        return cls(folder)

    @staticmethod
    def _render_into(folder: Path, utterances: list[Utterance], sample_rate: int, program: str, version: str,
                     progress: bool, workers: int | None) -> None:
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            workers = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(workers) as pool:
                jobs = pool.map(lambda u: render(u, sample_rate, program), utterances)
                if progress:
                    from tqdm import tqdm

                    jobs = tqdm(jobs, total=len(utterances), desc=f"rendering spoken {folder.name.split('-')[0]}",
                                unit="utt")
                waves = list(jobs)
            lengths = [len(w) for w in waves]
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            audio = np.concatenate(waves)
            np.save(tmp / "audio.npy", np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16))
            index = {"format": FORMAT, "synthesizer": version, "sample_rate": sample_rate,
                     "offsets": offsets.tolist(), "lengths": lengths, "utterances": [asdict(u) for u in utterances]}
            (tmp / "index.json").write_text(json.dumps(index))
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class SpokenMixtures(torch.utils.data.Dataset):
    """Mixtures of spoken utterances, deterministic by ``(seed, split, index)`` (and the epoch
    with ``dynamic_mixing``), drawn exactly as :class:`~sepkit.data.synth.SyntheticMixtures`
    draws its own: distinct speakers, lengths in ``spec``'s duration range, levels, optional
    noise and reverberation. Each source is a random stretch of a random utterance of its speaker
    (one that is not mostly silence), zero-padded where the utterance is shorter.

    Items: ``mixture`` ``(T,)``, ``sources`` ``(n_src, T)`` float32 tensors and ``id``.

    Args:
        num_examples: length of the data set.
        spec: :class:`~sepkit.data.synth.MixtureSpec` (its ``sample_rate`` must be the corpus's).
        corpus: :class:`SpokenCorpus` the sources come from.
        split: split name (in the seeds and ids).
        seed: base seed.
        dynamic_mixing: a fresh mixture for every ``(epoch, index)`` (call :meth:`set_epoch`).
    """

    def __init__(self, num_examples: int, spec: MixtureSpec, corpus: SpokenCorpus, split: str = "train",
                 seed: int = 0, dynamic_mixing: bool = False):
        if num_examples < 1:
            raise InputError(f"SpokenMixtures: num_examples must be positive, got {num_examples}")
        if spec.sample_rate != corpus.sample_rate:
            raise InputError(f"SpokenMixtures: spec.sample_rate={spec.sample_rate} but the corpus is at "
                             f"{corpus.sample_rate} Hz")
        if len(corpus.speakers) < spec.n_src:
            raise InputError(f"SpokenMixtures: {spec.n_src} speakers per mixture, the corpus has "
                             f"{len(corpus.speakers)}; render more utterances")
        self.num_examples, self.spec, self.corpus = num_examples, spec, corpus
        self.split, self.seed, self.dynamic_mixing = split, seed, dynamic_mixing
        self.sample_rate, self.n_src, self.epoch = spec.sample_rate, spec.n_src, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def rng(self, index: int) -> np.random.Generator:
        key = [self.seed, split_code(self.split), index, 0x5B0C]
        if self.dynamic_mixing:
            key.append(self.epoch + 1)
        return np.random.default_rng(key)

    def _source(self, speaker: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of a random utterance of speaker number ``speaker``."""
        choices = self.corpus.by_speaker[self.corpus.speakers[speaker]]
        utt = self.corpus.audio(choices[int(rng.integers(len(choices)))])
        out = np.zeros(n)
        if len(utt) <= n:
            start = int(rng.integers(0, n - len(utt) + 1))
            out[start : start + len(utt)] = utt
        else:
            full = np.sqrt(np.mean(utt**2))
            for _ in range(8):  # a stretch that is not mostly a pause
                start = int(rng.integers(0, len(utt) - n + 1))
                out = utt[start : start + n].copy()
                if np.sqrt(np.mean(out**2)) > 0.3 * full:
                    break
        return out + 0.05 * 1e-3 * rng.standard_normal(n)  # the synthetic sources' noise floor, -60 dB

    def draw(self, index: int) -> dict:
        """The full :func:`~sepkit.data.synth.mix_utterances` record of item ``index``."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"SpokenMixtures: index {index} out of range for {self.num_examples} examples")
        return mix_utterances(self.spec, self.corpus.speakers, self._source, self.rng(index))

    def __getitem__(self, index: int) -> dict:
        rec = self.draw(index)
        return {"mixture": torch.from_numpy(rec["mixture"]), "sources": torch.from_numpy(rec["sources"]),
                "id": f"{self.split}-{index:06d}"}
