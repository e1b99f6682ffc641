"""Build ``audio_samples/`` from real recordings in three Debian packages.

The folder holds short labeled clips for clip tagging and calibration and
strongly labeled soundscapes for sound event detection, all cut from:

- ``asterisk-core-sounds-en-wav`` 1.6.1-1: recorded English prompts (Allison Smith), CC-BY-SA-3.0;
- ``asterisk-moh-opsound-wav`` 2.03-1.1: music on hold (Macroform, Manolo Camp, Reno Project), CC-BY-SA-3.0;
- ``sound-theme-freedesktop`` 0.8-2: alarm clock, telephone ring, busy signal, camera shutter,
  bells (per-file licenses: CC-BY-SA-3.0, CC-BY-3.0, GPL-2+).

Outputs (all written by this script, nothing by hand):

- ``audio_samples/*.wav``: 16 kHz mono 16-bit PCM clips, single sources and mixtures at stated SNRs;
- ``audio_samples/labels.csv``: ``filename,labels,duration_s`` with AudioSet class names present in both
  the 527-class AudioSet list and YAMNet's 521-class map, separated by ``;``;
- ``audio_samples/labels_dcase2019.csv``: the same files labeled with DCASE2019 task 4 names
  (empty where no DCASE class applies);
- ``audio_samples/manifest.csv``: provenance of each clip (sources, excerpt times, SNR, level, license);
- ``audio_samples/soundscapes/*.flac``: 10-s, 22.05 kHz mono soundscapes, events over low-level music;
- ``audio_samples/soundscapes/strong_labels{,_tune,_heldout}.tsv``: DCASE strong labels
  (``filename<TAB>onset<TAB>offset<TAB>event_label``), all files / tuning half / held-out half;
- ``audio_samples/soundscapes/manifest.csv``: split, background and events of each soundscape;
- ``audio_samples/ATTRIBUTION.md``.

Licenses are kept apart: sources under GPL-2+ (telephone ring, busy signal) are never mixed with
CC-BY-SA-3.0 sources, since a mixture would be a derivative of both and the two licenses each
require derivatives to be released under themselves.

Run from the repository root on a Debian machine (needs ``apt-get download`` and ``dpkg-deb``,
no root, network to a Debian mirror; Python packages: numpy, soundfile, soxr, librosa)::

    python scripts/build_audio_samples.py                 # (re)write audio_samples/
    python scripts/build_audio_samples.py --check         # rebuild in a temp dir, compare with audio_samples/
    python scripts/build_audio_samples.py --debs DIR      # use .deb files already in DIR (no download)

Everything is seeded: the same package versions give the same files. ``--check`` compares text
files byte for byte and audio sample for sample (at most 2 LSB apart, since the Vorbis decoder of
another libsndfile build may round differently).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr

SEED = 20240605
CLIP_RATE = 16_000
SCAPE_RATE = 22_050
SCAPE_DURATION_S = 10.0
N_SCAPES = 8  # the first half tunes, the second half is held out
TRIM_TOP_DB = 35.0  # silence threshold below the source's peak frame, for trimming and event bounds

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "audio_samples"


@dataclass(frozen=True)
class Package:
    """A pinned Debian package and the sha256 of its .deb."""

    name: str
    version: str
    sha256: str
    upstream: str


PACKAGES = {
    "speech": Package(
        "asterisk-core-sounds-en-wav",
        "1.6.1-1",
        "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
        "Asterisk core sound prompts, recorded by Allison Smith (http://www.theivrvoice.com), "
        "financial contributions by Digium, Inc.",
    ),
    "music": Package(
        "asterisk-moh-opsound-wav",
        "2.03-1.1",
        "8f9d808a729d305c2d3343993f21ca5e6829e411682618dc8ea7aa8bc24a566c",
        "Asterisk music on hold (opsound): Macroform (Paul Shuler), Manolo Camp, Reno Project",
    ),
    "theme": Package(
        "sound-theme-freedesktop",
        "0.8-2",
        "135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea",
        "freedesktop.org sound theme (William Jon McCann, Lennart Poettering)",
    ),
}

SPEECH_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
MUSIC_DIR = "usr/share/asterisk/moh"
THEME_DIR = "usr/share/sounds/freedesktop/stereo"
# Prompts that hold tones or effects rather than speech alone.
NOT_SPEECH = re.compile(r"beep|tone|glorious|monkeys")

# License and copyright holder of each source, from the packages' debian/copyright files.
MUSIC_AUTHORS = {
    "macroform-cold_day.wav": "Paul Shuler (Macroform), 2009",
    "macroform-robot_dity.wav": "Paul Shuler (Macroform), 2009",
    "macroform-the_simplicity.wav": "Paul Shuler (Macroform), 2009",
    "manolo_camp-morning_coffee.wav": "Manolo Camp, 2009",
    "reno_project-system.wav": "Reno Project, 2008",
}
THEME_SOURCES = {  # file -> (license, copyright holder)
    "alarm-clock-elapsed.oga": ("CC-BY-SA-3.0", "Tim/corsica_s"),
    "phone-incoming-call.oga": ("GPL-2+", "Damien Sandras"),
    "phone-outgoing-busy.oga": ("GPL-2+", "Damien Sandras"),
    "camera-shutter.oga": ("CC-BY-SA-3.0", "freesound user horsthorstensen"),
    "complete.oga": ("CC-BY-3.0", "Dr. Richard Boulanger et al"),
    "bell.oga": ("CC-BY-3.0", "Dr. Richard Boulanger et al"),
}
LICENSE_URLS = {
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/",
    "GPL-2+": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
}
# AudioSet class (present in both the 527-class list and YAMNet's map) -> DCASE2019 task 4 class.
DCASE2019 = {
    "Speech": "Speech",
    "Alarm clock": "Alarm_bell_ringing",
    "Telephone bell ringing": "Alarm_bell_ringing",
}


# --- sources ---------------------------------------------------------------------------------


def fetch_packages(debs_dir: Path | None, work: Path) -> dict[str, Path]:
    """Download (or take from ``debs_dir``) the pinned .deb files, check them, extract them.

    Returns the root folder of each extracted package, keyed like PACKAGES.
    """
    roots = {}
    for key, pkg in PACKAGES.items():
        deb_name = f"{pkg.name}_{pkg.version}_all.deb"
        if debs_dir is not None:
            deb = debs_dir / deb_name
        else:
            subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=work, check=True)
            deb = work / deb_name
        if not deb.is_file():
            sys.exit(f"expected {deb}; got no such file (apt-get download {pkg.name}={pkg.version})")
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != pkg.sha256:
            sys.exit(f"{deb}: sha256 {digest}, expected {pkg.sha256}; the package changed upstream")
        root = work / key
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        roots[key] = root
    return roots


def load(path: Path, rate: int) -> np.ndarray:
    """Read a file, downmix to mono, resample to ``rate`` (soxr VHQ); float64."""
    audio, source_rate = sf.read(path, dtype="float64", always_2d=True)
    mono = audio.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate, quality="VHQ")
    return mono


def trim(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Cut leading and trailing silence (frames more than TRIM_TOP_DB below the peak frame).

    Returns the kept slice and the index where it starts.
    """
    frame = max(64, rate // 50)  # 20 ms frames, 5 ms hop
    _, (start, end) = librosa.effects.trim(
        audio, top_db=TRIM_TOP_DB, frame_length=frame, hop_length=frame // 4
    )
    return audio[start:end], int(start)


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(audio**2) + 1e-20))


def at_level(audio: np.ndarray, level_db: float) -> np.ndarray:
    """Scale so that the RMS over the whole array is ``level_db`` dBFS."""
    return audio * 10 ** ((level_db - rms_db(audio)) / 20)


@dataclass
class Sources:
    """The source recordings, decoded at one sample rate."""

    roots: dict[str, Path]
    rate: int
    _cache: dict[str, np.ndarray] = field(default_factory=dict)

    def path(self, key: str, rel: str) -> Path:
        base = {"speech": SPEECH_DIR, "music": MUSIC_DIR, "theme": THEME_DIR}[key]
        return self.roots[key] / base / rel

    def get(self, key: str, rel: str) -> np.ndarray:
        name = f"{key}:{rel}"
        if name not in self._cache:
            self._cache[name] = load(self.path(key, rel), self.rate)
        return self._cache[name]

    def speech_prompts(self) -> list[str]:
        folder = self.roots["speech"] / SPEECH_DIR
        return sorted(p.name for p in folder.glob("*.wav") if not NOT_SPEECH.search(p.name))


@dataclass
class Excerpt:
    """A piece of a source recording, and where it came from."""

    audio: np.ndarray
    origin: str  # "package-file[start-end s]"
    license: str


def describe(key: str, rel: str, start_s: float, end_s: float) -> str:
    return f"{PACKAGES[key].name}:{rel}[{start_s:.3f}-{end_s:.3f}s]"


def license_of(key: str, rel: str) -> str:
    return THEME_SOURCES[rel][0] if key == "theme" else "CC-BY-SA-3.0"


def speech_excerpt(src: Sources, prompt: str) -> Excerpt:
    cut, start = trim(src.get("speech", prompt), src.rate)
    return Excerpt(
        cut, describe("speech", prompt, start / src.rate, (start + cut.size) / src.rate), "CC-BY-SA-3.0"
    )


def pick_prompts(
    src: Sources, rng: np.random.Generator, used: set[str], n: int, lo_s: float, hi_s: float
) -> list[str]:
    """``n`` unused prompts whose trimmed speech lasts between lo_s and hi_s, in seeded order."""
    chosen = []
    for prompt in rng.permutation(src.speech_prompts()):
        if prompt in used:
            continue
        length = trim(src.get("speech", prompt), src.rate)[0].size / src.rate
        if lo_s <= length <= hi_s:
            chosen.append(str(prompt))
            used.add(str(prompt))
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"only {len(chosen)} prompts last {lo_s}-{hi_s} s; wanted {n}")


def music_excerpt(src: Sources, rng: np.random.Generator, track: str, duration_s: float) -> Excerpt:
    """A seeded excerpt with no pause: every 100-ms frame within 30 dB of the track's loudest."""
    audio = src.get("music", track)
    hop = src.rate // 10
    frames = librosa.feature.rms(y=audio, frame_length=hop, hop_length=hop, center=False)[0]
    loud = 20 * np.log10(frames + 1e-10) > 20 * np.log10(frames.max()) - 30
    n = int(round(duration_s * 10))
    starts = [i for i in range(frames.size - n) if loud[i : i + n].all()]
    i = int(rng.choice(starts))
    start = i * hop
    piece = audio[start : start + int(round(duration_s * src.rate))]
    return Excerpt(
        piece, describe("music", track, start / src.rate, (start + piece.size) / src.rate), "CC-BY-SA-3.0"
    )


def theme_excerpt(
    src: Sources, name: str, start_s: float = 0.0, end_s: float | None = None, *, trimmed: bool = True
) -> Excerpt:
    audio = src.get("theme", name)
    start = int(round(start_s * src.rate))
    end = audio.size if end_s is None else int(round(end_s * src.rate))
    piece = audio[start:end]
    if trimmed:
        piece, skipped = trim(piece, src.rate)
        start += skipped
    return Excerpt(
        piece,
        describe("theme", name, start / src.rate, (start + piece.size) / src.rate),
        license_of("theme", name),
    )


def alarm_pairs(src: Sources) -> list[tuple[float, float]]:
    """(onset, offset) in seconds of the alarm clock's double beeps, found at the file's own rate.

    Its beeps sit at 8.2 kHz: above 8 kHz they vanish at 16 kHz, so activity is measured on the
    original signal, where they are 30 dB above the gaps.
    """
    audio, rate = sf.read(src.path("theme", "alarm-clock-elapsed.oga"), dtype="float64", always_2d=True)
    beeps = librosa.effects.split(
        audio.mean(axis=1), top_db=30, frame_length=rate // 50, hop_length=rate // 200
    )
    times = [(a / rate, b / rate) for a, b in beeps]
    return [(times[i][0], times[i + 1][1]) for i in range(0, len(times) - 1, 2)]


# --- clips -----------------------------------------------------------------------------------


@dataclass
class Clip:
    filename: str
    audio: np.ndarray
    labels: tuple[str, ...]
    kind: str
    sources: list[str]
    licenses: set[str]
    snr: str = ""
    level_db: float = 0.0


def place(length: int, excerpt: np.ndarray, offset: int) -> np.ndarray:
    out = np.zeros(length)
    out[offset : offset + excerpt.size] += excerpt[: max(0, length - offset)]
    return out


def mix_at_snr(foreground: np.ndarray, background: np.ndarray, snr_db: float, span: slice) -> np.ndarray:
    """foreground + background, the foreground scaled so that, over ``span`` (where it sounds),
    10*log10(mean(fg^2) / mean(bg^2)) equals ``snr_db``."""
    gain_db = snr_db - (rms_db(foreground[span]) - rms_db(background[span]))
    return foreground * 10 ** (gain_db / 20) + background


def finish(clip: Clip, rng: np.random.Generator) -> Clip:
    """Set a seeded loudness (-26..-18 dBFS RMS) and keep peaks below 0.95."""
    audio = at_level(clip.audio, float(rng.uniform(-26, -18)))
    peak = np.abs(audio).max()
    if peak > 0.95:
        audio *= 0.95 / peak
    clip.audio = audio
    clip.level_db = rms_db(audio)
    return clip


def seconds(x: float) -> int:
    return int(round(x * CLIP_RATE))


def build_clips(src: Sources) -> list[Clip]:
    """The clip set; each part draws from its own seeded generator."""
    rng = np.random.default_rng([SEED, 1])
    used: set[str] = set()
    clips: list[Clip] = []
    tracks = sorted(MUSIC_AUTHORS)

    def add(name, audio, labels, kind, excerpts, snr=""):
        clips.append(
            finish(
                Clip(
                    f"{name}.wav",
                    audio,
                    tuple(labels),
                    kind,
                    [e.origin for e in excerpts],
                    {e.license for e in excerpts},
                    snr,
                ),
                rng,
            )
        )

    margin = seconds(0.15)
    for i, prompt in enumerate(pick_prompts(src, rng, used, 8, 2.0, 3.0), start=1):
        e = speech_excerpt(src, prompt)
        add(f"speech_{i:02d}", place(e.audio.size + 2 * margin, e.audio, margin), ["Speech"], "single", [e])

    for i in range(7):
        e = music_excerpt(src, rng, tracks[i % len(tracks)], 2.5)
        add(f"music_{i + 1:02d}", e.audio, ["Music"], "single", [e])

    pairs = alarm_pairs(src)
    for i in range(4):
        start = pairs[i][0] - 0.1
        e = theme_excerpt(src, "alarm-clock-elapsed.oga", start, start + 2.5, trimmed=False)
        add(f"alarm_clock_{i + 1:02d}", e.audio, ["Alarm clock"], "single", [e])

    ring = theme_excerpt(src, "phone-incoming-call.oga")
    for i, (length_s, onsets_s) in enumerate(
        [(2.5, [0.2]), (2.5, [0.9]), (2.0, [0.4]), (3.0, [0.1, 1.6]), (3.0, [0.05, 1.55]), (2.5, [1.3])],
        start=1,
    ):
        audio = sum(place(seconds(length_s), ring.audio, seconds(t)) for t in onsets_s)
        add(f"telephone_ring_{i:02d}", audio, ["Telephone bell ringing"], "single", [ring])

    shutter = theme_excerpt(src, "camera-shutter.oga")
    add("camera_01", place(seconds(1.5), shutter.audio, seconds(0.4)), ["Camera"], "single", [shutter])
    add(
        "camera_02",
        place(seconds(2.0), shutter.audio, seconds(0.2)) + place(seconds(2.0), shutter.audio, seconds(1.1)),
        ["Camera"],
        "single",
        [shutter],
    )

    busy = theme_excerpt(src, "phone-outgoing-busy.oga", trimmed=False)
    add("busy_signal_01", busy.audio, ["Busy signal"], "single", [busy])
    busy_part = theme_excerpt(src, "phone-outgoing-busy.oga", 0.0, 1.1)
    add(
        "busy_signal_02",
        place(seconds(1.5), busy_part.audio, seconds(0.2)),
        ["Busy signal"],
        "single",
        [busy_part],
    )

    ding = theme_excerpt(src, "complete.oga")
    add("ding_01", place(seconds(1.5), ding.audio, seconds(0.2)), ["Ding"], "single", [ding])
    bell = theme_excerpt(src, "bell.oga")
    add(
        "ding_02",
        sum(place(seconds(1.5), bell.audio, seconds(t)) for t in (0.15, 0.6, 1.05)),
        ["Ding"],
        "single",
        [bell],
    )

    length = seconds(2.5)
    mix_prompts = iter(pick_prompts(src, rng, used, 9, 1.2, 2.2))

    def speech_in_clip():
        e = speech_excerpt(src, next(mix_prompts))
        offset = int(rng.integers(seconds(0.05), length - e.audio.size - seconds(0.05)))
        return e, place(length, e.audio, offset), slice(offset, offset + e.audio.size)

    def music_in_clip():
        e = music_excerpt(src, rng, tracks[int(rng.integers(len(tracks)))], 2.5)
        return e, e.audio[:length]

    # Speech over music.
    for i, snr in enumerate([0.0, 5.0, 10.0, 15.0], start=1):
        s, s_audio, span = speech_in_clip()
        m, m_audio = music_in_clip()
        add(
            f"speech_music_{i:02d}",
            mix_at_snr(s_audio, m_audio, snr, span),
            ["Speech", "Music"],
            "mixture",
            [s, m],
            f"Speech/Music={snr:g}dB",
        )

    # Alarm clock over music.
    for i, snr in enumerate([0.0, 5.0, 10.0], start=1):
        start = pairs[int(rng.integers(0, 4))][0] - 0.1
        a = theme_excerpt(src, "alarm-clock-elapsed.oga", start, start + 2.5, trimmed=False)
        m, m_audio = music_in_clip()
        add(
            f"music_alarm_clock_{i:02d}",
            mix_at_snr(a.audio[:length], m_audio, snr, slice(0, length)),
            ["Music", "Alarm clock"],
            "mixture",
            [a, m],
            f"Alarm clock/Music={snr:g}dB",
        )

    # Speech over an alarm clock.
    for i, snr in enumerate([0.0, 5.0, 10.0], start=1):
        s, s_audio, span = speech_in_clip()
        start = pairs[int(rng.integers(0, 4))][0] - 0.1
        a = theme_excerpt(src, "alarm-clock-elapsed.oga", start, start + 2.5, trimmed=False)
        add(
            f"speech_alarm_clock_{i:02d}",
            mix_at_snr(s_audio, a.audio[:length], snr, span),
            ["Speech", "Alarm clock"],
            "mixture",
            [s, a],
            f"Speech/Alarm clock={snr:g}dB",
        )

    # Camera shutter over speech, over music; a ding over music.
    s, s_audio, span = speech_in_clip()
    c_audio = place(length, shutter.audio, seconds(1.8))
    c_span = slice(seconds(1.8), seconds(1.8) + shutter.audio.size)
    add(
        "speech_camera_01",
        mix_at_snr(c_audio, s_audio, 5.0, c_span),
        ["Speech", "Camera"],
        "mixture",
        [s, shutter],
        "Camera/Speech=5dB",
    )
    m, m_audio = music_in_clip()
    add(
        "music_camera_01",
        mix_at_snr(c_audio, m_audio, 5.0, c_span),
        ["Music", "Camera"],
        "mixture",
        [shutter, m],
        "Camera/Music=5dB",
    )
    m, m_audio = music_in_clip()
    d_audio = place(length, ding.audio, seconds(0.7))
    d_span = slice(seconds(0.7), seconds(0.7) + ding.audio.size)
    add(
        "music_ding_01",
        mix_at_snr(d_audio, m_audio, 5.0, d_span),
        ["Music", "Ding"],
        "mixture",
        [ding, m],
        "Ding/Music=5dB",
    )

    # Three sources: speech over music at 10 dB, then an alarm clock over that at 5 dB.
    s, s_audio, span = speech_in_clip()
    m, m_audio = music_in_clip()
    bed = mix_at_snr(s_audio, m_audio, 10.0, span)
    start = pairs[int(rng.integers(0, 4))][0] - 0.1
    a = theme_excerpt(src, "alarm-clock-elapsed.oga", start, start + 2.5, trimmed=False)
    add(
        "speech_music_alarm_clock_01",
        mix_at_snr(a.audio[:length], bed, 5.0, slice(0, length)),
        ["Speech", "Music", "Alarm clock"],
        "mixture",
        [s, m, a],
        "Speech/Music=10dB; Alarm clock/(Speech+Music)=5dB",
    )

    for clip in clips:
        if "GPL-2+" in clip.licenses and len(clip.licenses) > 1:
            raise RuntimeError(f"{clip.filename} mixes GPL-2+ with {clip.licenses - {'GPL-2+'}}")
    return clips


# --- soundscapes -----------------------------------------------------------------------------


@dataclass
class Event:
    onset_s: float
    offset_s: float
    label: str  # DCASE2019 name
    origin: str


@dataclass
class Soundscape:
    filename: str
    split: str
    audio: np.ndarray
    events: list[Event]
    background: str
    background_db: float


def build_soundscapes(src: Sources) -> list[Soundscape]:
    """Events of Speech and Alarm_bell_ringing (alarm clock beeps) over music 8-24 dB below them.

    Events are at -24..-16 dBFS RMS, the music at -40..-32 dBFS RMS, all levels seeded.

    Only CC-BY-SA-3.0 sources, so the telephone ring (GPL-2+) is not used here. Events of one
    class are at least 1 s apart; events of different classes may overlap.
    """
    rng = np.random.default_rng([SEED, 2])
    tracks = sorted(MUSIC_AUTHORS)
    pairs = alarm_pairs(src)
    used: set[str] = set()
    prompts = iter(pick_prompts(src, rng, used, 4 * N_SCAPES, 0.8, 3.0))
    scapes = []
    for k in range(N_SCAPES):
        split = "tune" if k < N_SCAPES // 2 else "heldout"
        name = f"{split}_{k % (N_SCAPES // 2):02d}.flac"
        background = music_excerpt(src, rng, tracks[k % len(tracks)], SCAPE_DURATION_S)
        background_db = float(rng.uniform(-40, -32))
        audio = at_level(background.audio, background_db)
        n_speech = int(rng.integers(2, 4))
        n_alarm = int(rng.integers(1, 4))
        kinds = ["Speech"] * n_speech + ["Alarm_bell_ringing"] * n_alarm
        events: list[Event] = []
        for label in rng.permutation(kinds):
            if label == "Speech":
                e = speech_excerpt(src, next(prompts))
            else:
                first = int(rng.integers(0, len(pairs)))
                last = min(len(pairs) - 1, first + int(rng.integers(0, 3)))
                e = theme_excerpt(
                    src, "alarm-clock-elapsed.oga", pairs[first][0] - 0.05, pairs[last][1] + 0.05
                )
            duration_s = e.audio.size / src.rate
            for _ in range(200):
                onset = float(np.round(rng.uniform(0.1, SCAPE_DURATION_S - duration_s - 0.1), 3))
                clash = any(
                    ev.label == label and onset < ev.offset_s + 1.0 and ev.onset_s < onset + duration_s + 1.0
                    for ev in events
                )
                if not clash:
                    break
            else:
                continue  # no room left for this event
            start = int(round(onset * src.rate))
            audio[start : start + e.audio.size] += at_level(e.audio, float(rng.uniform(-24, -16)))
            events.append(Event(onset, round(onset + duration_s, 3), str(label), e.origin))
        peak = np.abs(audio).max()
        if peak > 0.95:
            audio *= 0.95 / peak
        events.sort(key=lambda ev: (ev.onset_s, ev.label))
        scapes.append(Soundscape(name, split, audio, events, background.origin, background_db))
    return scapes


# --- writing ---------------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[object]], *, delimiter: str = ",") -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_all(out: Path, clips: list[Clip], scapes: list[Soundscape]) -> None:
    """Write every output file under ``out`` (which must be empty or absent)."""
    (out / "soundscapes").mkdir(parents=True, exist_ok=True)
    for clip in clips:
        sf.write(out / clip.filename, clip.audio.astype(np.float32), CLIP_RATE, subtype="PCM_16")
    write_csv(
        out / "labels.csv",
        ["filename", "labels", "duration_s"],
        [[c.filename, ";".join(c.labels), f"{c.audio.size / CLIP_RATE:.3f}"] for c in clips],
    )
    write_csv(
        out / "labels_dcase2019.csv",
        ["filename", "labels"],
        [
            [c.filename, ";".join(dict.fromkeys(DCASE2019[l] for l in c.labels if l in DCASE2019))]
            for c in clips
        ],
    )
    write_csv(
        out / "manifest.csv",
        ["filename", "kind", "labels", "duration_s", "level_dbfs", "snr", "license", "sources"],
        [
            [
                c.filename,
                c.kind,
                ";".join(c.labels),
                f"{c.audio.size / CLIP_RATE:.3f}",
                f"{c.level_db:.1f}",
                c.snr,
                ";".join(sorted(c.licenses)),
                " + ".join(c.sources),
            ]
            for c in clips
        ],
    )
    for scape in scapes:
        sf.write(
            out / "soundscapes" / scape.filename,
            scape.audio.astype(np.float32),
            SCAPE_RATE,
            format="FLAC",
            subtype="PCM_16",
            compression_level=1.0,
        )
    header = ["filename", "onset", "offset", "event_label"]
    for suffix, keep in (("", None), ("_tune", "tune"), ("_heldout", "heldout")):
        rows = [
            [s.filename, f"{e.onset_s:.3f}", f"{e.offset_s:.3f}", e.label]
            for s in scapes
            if keep in (None, s.split)
            for e in s.events
        ]
        write_csv(out / "soundscapes" / f"strong_labels{suffix}.tsv", header, rows, delimiter="\t")
    write_csv(
        out / "soundscapes" / "manifest.csv",
        ["filename", "split", "duration_s", "sample_rate", "background_dbfs", "background", "events"],
        [
            [
                s.filename,
                s.split,
                f"{s.audio.size / SCAPE_RATE:.3f}",
                SCAPE_RATE,
                f"{s.background_db:.1f}",
                s.background,
                " | ".join(f"{e.label}@{e.onset_s:.3f}-{e.offset_s:.3f} {e.origin}" for e in s.events),
            ]
            for s in scapes
        ],
    )
    (out / "ATTRIBUTION.md").write_text(attribution(clips, scapes), encoding="utf-8")
    (out / "README.md").write_text(readme(clips, scapes), encoding="utf-8")


def readme(clips: list[Clip], scapes: list[Soundscape]) -> str:
    """A description of the folder with the counts of this build."""
    per_class: dict[str, list[int]] = {}
    for c in clips:
        for label in c.labels:
            counts = per_class.setdefault(label, [0, 0])
            counts[c.kind == "mixture"] += 1
    clip_s = sum(c.audio.size for c in clips) / CLIP_RATE
    lines = [
        "# audio_samples/",
        "",
        "Real recordings from Debian packages (see ATTRIBUTION.md), built by",
        "`python scripts/build_audio_samples.py`; do not edit by hand.",
        "",
        f"- {len(clips)} clips (`*.wav`, 16 kHz mono 16-bit, {clip_s:.1f} s in all): single sources and",
        "  mixtures at stated SNRs labeled with the union of their sources.",
        "- `labels.csv`: `filename,labels,duration_s`, labels `;`-separated AudioSet names found in both",
        "  YAMNet's 521 and Cnn14's 527 classes; `labels_dcase2019.csv`: the same clips in DCASE2019 task 4",
        "  names (crnn-dcase2019); `manifest.csv`: sources, excerpt times, SNR, level and license of each clip.",
        f"- `soundscapes/`: {len(scapes)} soundscapes of {SCAPE_DURATION_S:g} s (FLAC, {SCAPE_RATE} Hz mono): speech and",
        "  alarm-clock events over music 8-24 dB below them; DCASE strong labels in `strong_labels.tsv`,",
        "  its tuning half in `strong_labels_tune.tsv` (`tune_*.flac`) and its held-out half in",
        "  `strong_labels_heldout.tsv` (`heldout_*.flac`).",
        "",
        "The alarm clock beeps at 8.2 kHz, above the 8 kHz Nyquist limit of the 16 kHz clips: there its",
        "clips keep only the beeps' weaker components below 8 kHz (brought back to the clip level). The",
        "22.05 kHz soundscapes keep the 8.2 kHz tone.",
        "",
        "| class | single-source clips | mixtures | DCASE2019 name |",
        "|---|---|---|---|",
    ]
    for label, (single, mixed) in sorted(per_class.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {label} | {single} | {mixed} | {DCASE2019.get(label, '')} |")
    events: dict[str, list[int]] = {}
    for s in scapes:
        for e in s.events:
            events.setdefault(e.label, [0, 0])[s.split == "heldout"] += 1
    lines += ["", "| soundscape events | tune | held-out |", "|---|---|---|"]
    lines += [f"| {label} | {tune} | {held} |" for label, (tune, held) in sorted(events.items())]
    return "\n".join(lines) + "\n"


def attribution(clips: list[Clip], scapes: list[Soundscape]) -> str:
    uses: dict[str, list[str]] = {}
    for c in clips:
        for origin in c.sources:
            uses.setdefault(origin.split("[")[0], []).append(c.filename)
    for s in scapes:
        for origin in [s.background] + [e.origin for e in s.events]:
            uses.setdefault(origin.split("[")[0], []).append("soundscapes/" + s.filename)
    lines = [
        "# Attribution of audio_samples/",
        "",
        "Every audio file here is a modified excerpt of recordings distributed in Debian packages:",
        "cut, downmixed to mono, resampled (16 kHz clips, 22.05 kHz soundscapes), trimmed of silence,",
        "scaled, and in the mixtures and soundscapes summed with other recordings. Each file keeps the",
        "license of its sources (column `license` of manifest.csv; soundscapes are CC-BY-SA-3.0).",
        "GPL-2+ sources are never mixed with CC-BY-SA-3.0 ones. The script",
        "scripts/build_audio_samples.py rebuilds every file from the packages below.",
        "",
        "| package | version | .deb sha256 | upstream |",
        "|---|---|---|---|",
    ]
    for pkg in PACKAGES.values():
        lines.append(f"| {pkg.name} | {pkg.version} | `{pkg.sha256}` | {pkg.upstream} |")
    lines += ["", "Licenses: " + ", ".join(f"{k} <{v}>" for k, v in LICENSE_URLS.items()) + ".", ""]
    lines += ["| original file | license | author | used in |", "|---|---|---|---|"]
    for source in sorted(uses):
        package, rel = source.split(":", 1)
        if package == PACKAGES["speech"].name:
            license_, author = "CC-BY-SA-3.0", "Allison Smith, 2003-2010"
            path = f"/{SPEECH_DIR}/{rel}"
        elif package == PACKAGES["music"].name:
            license_, author = "CC-BY-SA-3.0", MUSIC_AUTHORS[rel]
            path = f"/{MUSIC_DIR}/{rel}"
        else:
            license_, author = THEME_SOURCES[rel]
            path = f"/{THEME_DIR}/{rel}"
        used_in = ", ".join(dict.fromkeys(uses[source]))
        lines.append(f"| {package}: `{path}` | {license_} | {author} | {used_in} |")
    return "\n".join(lines) + "\n"


def compare(built: Path, committed: Path) -> list[str]:
    """Differences between two output folders: text byte for byte, audio within 2 LSB."""
    problems = []
    names = {p.relative_to(built) for p in built.rglob("*") if p.is_file()}
    have = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()}
    problems += [f"missing in {committed}: {n}" for n in sorted(names - have)]
    problems += [f"not made by the script: {n}" for n in sorted(have - names)]
    for name in sorted(names & have):
        a, b = built / name, committed / name
        if name.suffix in (".wav", ".flac"):
            x, rate_x = sf.read(a, dtype="int16")
            y, rate_y = sf.read(b, dtype="int16")
            if rate_x != rate_y or x.shape != y.shape or np.abs(x.astype(int) - y).max(initial=0) > 2:
                problems.append(f"audio differs: {name}")
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"text differs: {name}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debs", type=Path, help="folder holding the three pinned .deb files (no download)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: audio_samples/)")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        roots = fetch_packages(args.debs, work)
        clips = build_clips(Sources(roots, CLIP_RATE))
        scapes = build_soundscapes(Sources(roots, SCAPE_RATE))
        target = work / "built" if args.check else args.out
        if not args.check:
            for old in list(target.glob("*.wav")) + list((target / "soundscapes").glob("*.flac")):
                old.unlink()
        write_all(target, clips, scapes)
        if args.check:
            problems = compare(target, args.out)
            if problems:
                sys.exit("audio_samples/ does not match the script:\n  " + "\n  ".join(problems))
            print(f"{args.out} matches the script")


if __name__ == "__main__":
    main()
