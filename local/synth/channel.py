"""Acoustic channel of the embedded corpus: sox effects plus seeded background noise.

Order, as in a real call: the talker's timbre and the room (sox `speed`, `reverb`, or a fixed
room's reverb and microphone EQ), background noise in the room (numpy, at a given SNR), then the
telephone line (sox: 8 kHz, band-pass, optional 8-bit mu-law, back to 16 kHz), then the recording
level. Output: float32 16 kHz mono.
"""
import subprocess
from pathlib import Path
from typing import List, Optional

import numpy as np

from local.synth.corpus_config import RoomConfig
from local.synth.corpus_plan import RenderSpec
from zipformer.core.errors import UserError
from zipformer.model.frontend import SAMPLE_RATE  # noqa: F401  (the rate everything here renders at)

TELEPHONE_RATE = 8000
_MU = 255.0


def _sox(input_args: List[str], effects: List[str], out_rate: int, stdin: Optional[bytes] = None) -> np.ndarray:
    """Run sox from `input_args` to raw float32 mono at `out_rate` on stdout."""
    command = ["sox", "-V1", "-G", *input_args, "-t", "f32", "-r", str(out_rate), "-c", "1", "-", *effects]
    result = subprocess.run(command, input=stdin, capture_output=True)
    if result.returncode != 0:
        raise UserError(
            f"sox failed ({' '.join(command)}): {result.stderr.decode(errors='replace').strip()}; "
            "check the sox installation (./local/setup.sh)"
        )
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def _raw_input(rate: int) -> List[str]:
    return ["-t", "f32", "-r", str(rate), "-c", "1", "-"]


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: white (flat), pink (1/f power) or brown (1/f^2 power)."""
    white = rng.standard_normal(num_samples)
    if color == "white":
        noise = white
    else:
        exponent = {"pink": 0.5, "brown": 1.0}.get(color)
        if exponent is None:
            raise UserError(f"unknown noise colour '{color}': use white, pink or brown")
        spectrum = np.fft.rfft(white)
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = 1.0
        noise = np.fft.irfft(spectrum / freqs**exponent, n=num_samples)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    speech_power = float(np.mean(audio.astype(np.float64) ** 2)) + 1e-12
    noise = colored_noise(len(audio), color, rng)
    return audio + noise * np.float32(np.sqrt(speech_power / 10 ** (snr_db / 10)))


def mu_law(audio: np.ndarray) -> np.ndarray:
    """8-bit mu-law encode + decode (the quantisation of a G.711 line)."""
    clipped = np.clip(audio, -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(_MU * np.abs(clipped)) / np.log1p(_MU)
    quantized = np.round((companded + 1.0) * 127.5) / 127.5 - 1.0
    return (np.sign(quantized) * np.expm1(np.abs(quantized) * np.log1p(_MU)) / _MU).astype(np.float32)


def set_level(audio: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale to an RMS of `level_dbfs`, then down again if that would clip."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms == 0.0:
        return audio
    audio = audio * np.float32(10 ** (level_dbfs / 20) / rms)
    peak = float(np.max(np.abs(audio)))
    return audio * np.float32(0.99 / peak) if peak > 0.99 else audio


def room_effects(room: RoomConfig) -> List[str]:
    """sox effects of a fixed room and microphone: reverb (mono, so stereo depth 0), then EQ bands."""
    effects = [
        "reverb", f"{room.reverberance}", f"{room.hf_damping}", f"{room.room_scale}", "0",
        f"{room.pre_delay_ms}", f"{room.wet_gain_db}",
    ]
    for centre_hz, width_octaves, gain_db in room.equalizer:
        effects += ["equalizer", f"{centre_hz}", f"{width_octaves}o", f"{gain_db}"]
    return effects


def render_waveform(tts_wav: Path, spec: RenderSpec) -> np.ndarray:
    """The final 16 kHz float32 waveform of one utterance, shape (num_samples,)."""
    effects = ["gain", "-n", "-6"]
    if abs(spec.timbre - 1.0) > 1e-4:
        effects += ["speed", f"{spec.timbre:.4f}"]
    if spec.reverb is not None:
        reverberance, room_scale = spec.reverb
        effects += ["reverb", f"{reverberance}", "50", f"{room_scale}"]
    if spec.room is not None:
        effects += room_effects(spec.room)
    audio = _sox([str(tts_wav)], effects, SAMPLE_RATE)
    if audio.size == 0:
        raise UserError(f"sox produced no audio from {tts_wav}: the TTS output is empty or unreadable")
    rng = np.random.default_rng(spec.seed)
    if spec.noise is not None:
        snr_db, color = spec.noise
        audio = add_noise(audio, snr_db, color, rng)
    if spec.telephone:
        low, high = spec.band_hz
        band = ["sinc", f"{low}-{high}"]
        if spec.mu_law:
            narrow = _sox(_raw_input(SAMPLE_RATE), ["rate", str(TELEPHONE_RATE), *band], TELEPHONE_RATE, audio.tobytes())
            narrow = mu_law(set_level(narrow, -16.0))
            audio = _sox(_raw_input(TELEPHONE_RATE), ["rate", str(SAMPLE_RATE)], SAMPLE_RATE, narrow.tobytes())
        else:
            audio = _sox(
                _raw_input(SAMPLE_RATE),
                ["rate", str(TELEPHONE_RATE), *band, "rate", str(SAMPLE_RATE)],
                SAMPLE_RATE,
                audio.tobytes(),
            )
    return set_level(audio, spec.level_dbfs)
