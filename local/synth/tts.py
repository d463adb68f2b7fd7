"""Command lines of the offline TTS engines (espeak-ng, flite, festival's text2wave).

Each engine writes a mono WAV file at its own sampling rate (espeak-ng 22.05 kHz, flite 8/16 kHz,
festival 16/32 kHz); local/synth/channel.py resamples to 16 kHz.
"""
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List

from zipformer.core.errors import UserError

# The executable each engine needs and the Debian package that provides it.
ENGINE_TOOLS = {"espeak-ng": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"), "festival": ("text2wave", "festival")}
ESPEAK_DEFAULT_WPM = 175


def check_tools(voices_by_engine: Dict[str, Iterable[str]], extra: Iterable[str] = ("sox",)) -> None:
    """Raise a UserError naming the first missing executable (or flite voice) and how to get it.

    flite is checked voice by voice because it silently falls back to its default voice when
    asked for one it does not have; espeak-ng and festival fail loudly on their own.
    """
    needed = [ENGINE_TOOLS[e] for e in voices_by_engine] + [(tool, tool) for tool in extra]
    for tool, package in needed:
        if shutil.which(tool) is None:
            raise UserError(
                f"TTS/audio tool '{tool}' not found: run ./local/setup.sh (it runs "
                f"apt-get install {package}) and try again"
            )
    if "flite" in voices_by_engine:
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        available = set(listing.split(":", 1)[-1].split())
        for voice in voices_by_engine["flite"]:
            if voice not in available:
                raise UserError(
                    f"flite has no voice '{voice}' (it has: {' '.join(sorted(available))}): "
                    "fix the voice list in the corpus config"
                )


def tts_command(engine: str, voice: str, pitch: int, rate: float, out_wav: Path) -> List[str]:
    """The command that reads the text on stdin and writes `out_wav`."""
    if engine == "espeak-ng":
        wpm = max(80, round(ESPEAK_DEFAULT_WPM * rate))
        return ["espeak-ng", "--stdin", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(out_wav)]
    if engine == "flite":
        return ["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.4f}", "-f", "/dev/stdin", "-o", str(out_wav)]
    if engine == "festival":
        return [
            "text2wave", "-o", str(out_wav),
            "-eval", f"(voice_{voice})",
            "-eval", f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})",
        ]
    raise UserError(f"unknown TTS engine '{engine}': use espeak-ng, flite or festival")


def synthesize(engine: str, voice: str, pitch: int, rate: float, text: str, out_wav: Path) -> None:
    """Speak `text` into `out_wav`; a UserError names the engine, voice and text on failure."""
    command = tts_command(engine, voice, pitch, rate, out_wav)
    try:
        result = subprocess.run(command, input=text.encode(), capture_output=True, timeout=120)
    except FileNotFoundError:
        raise UserError(
            f"TTS engine '{command[0]}' not found: run ./local/setup.sh (apt-get install "
            f"{ENGINE_TOOLS[engine][1]})"
        ) from None
    if result.returncode != 0 or not out_wav.is_file() or out_wav.stat().st_size <= 44:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(
            f"{engine} voice '{voice}' produced no audio for \"{text}\""
            f"{': ' + message[-1] if message else ''}; check that the voice is installed "
            f"({engine} lists its voices) or remove it from the corpus config"
        )
