"""Playability: what a re-encoded video output is by default so that it plays where users play video (browsers,
phones, TVs, Apple players), and the filters that get it there. Pure: from the validated spec and the probed input.

- Pixel format and profile: 8-bit 4:2:0 (h264 High, h265 Main tagged hvc1 in MP4/MOV, vp9 profile 0, av1 Main);
  10-bit, 4:2:2 or 4:4:4 only when the spec asks (video.pixelFormat, video.dynamicRange hdr).
- Colour: every output states its primaries, transfer, matrix and range. SDR outputs are BT.709 limited range;
  an HDR input (PQ or HLG) is tone-mapped to it unless the spec keeps HDR, and other colourimetries (BT.601,
  full range, RGB) are converted, so the tags always describe the pixels.
- Geometry: upright (ffmpeg applies the display rotation while decoding), square pixels, even sizes; named sizes
  are the short side, so a portrait 720p is 720x1280.
- Time: interlaced inputs are deinterlaced, variable-frame-rate inputs come out at a constant rate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from transkube_api.models import (
    RESOLUTION_HEIGHTS,
    AspectSpec,
    FiltersSpec,
    InputFacts,
    MasteringDisplay,
    VideoSpec,
)

# ---- colour ------------------------------------------------------------------------------------------------

HDR_TRANSFERS: dict[str, str] = {"smpte2084": "pq", "arib-std-b67": "hlg"}
# ffprobe's names that zscale also understands; anything else counts as unspecified.
KNOWN_PRIMARIES = frozenset({"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte431",
                             "smpte432"})
KNOWN_MATRICES = frozenset({"bt709", "bt470bg", "smpte170m", "bt2020nc", "bt2020c", "fcc", "ycgco"})
HDR_MATRICES = frozenset({"bt2020nc", "bt2020c"})
RGB_PREFIXES = ("rgb", "bgr", "gbr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr", "pal8")

# Tone mapping HDR to SDR: linear light with 100 cd/m2 as SDR white, BT.709 primaries, then mobius, which leaves
# everything up to about 30 cd/m2 unchanged and rolls the highlights off smoothly to the peak. Measured on PQ
# grey bars (10, 100, 203, 1000 cd/m2 -> full-range 8-bit): mobius 103, 215, 235, 255; hable, the other common
# choice, 69, 157, 192, 255, which makes ordinary footage look a stop too dark. desat=0: keep the saturation.
NOMINAL_PEAK = 100
TONEMAP = "mobius"


@dataclass(frozen=True)
class Colour:
    """Colour description in ffmpeg's names (as ffprobe prints them and -color_* and zscale take them)."""

    primaries: str
    transfer: str
    matrix: str
    range: str  # tv (limited) or pc (full)

    @property
    def hdr(self) -> bool:
        return self.transfer in HDR_TRANSFERS

    def args(self) -> list[str]:
        """Output options that tag the stream (bitstream VUI and container) explicitly."""
        return ["-color_primaries", self.primaries, "-color_trc", self.transfer, "-colorspace", self.matrix,
                "-color_range", self.range]

    def zscale_in(self) -> str:
        return f"pin={self.primaries}:tin={self.transfer}:min={self.matrix}:rin={self.range}"


BT709 = Colour("bt709", "bt709", "bt709", "tv")


def is_rgb(pix_fmt: str | None) -> bool:
    return bool(pix_fmt) and str(pix_fmt).startswith(RGB_PREFIXES)


def is_sd(facts: InputFacts) -> bool:
    """Standard definition, as players decide which matrix an untagged video uses (mpv, Safari, Chromium)."""
    if not facts.width or not facts.height:
        return False
    return max(facts.width, facts.height) < 1280 and min(facts.width, facts.height) <= 576


def source_colour(facts: InputFacts) -> Colour:
    """The input's colourimetry, its unspecified parts guessed the way players guess them: BT.709, or BT.601 for
    standard definition; BT.2020 for HDR; full range for RGB and yuvj formats. SDR transfers (BT.709, BT.601,
    sRGB, gamma 2.2...) all count as BT.709: they describe the same kind of display and are not converted."""
    transfer = facts.color_transfer if facts.color_transfer in HDR_TRANSFERS else "bt709"
    hdr = transfer in HDR_TRANSFERS
    primaries = facts.color_primaries if facts.color_primaries in KNOWN_PRIMARIES else (
        "bt2020" if hdr else "bt709")
    rgb = is_rgb(facts.pixel_format)
    if rgb:
        matrix = "gbr"
    elif facts.color_space in KNOWN_MATRICES:
        matrix = str(facts.color_space)
    elif hdr or primaries == "bt2020":
        matrix = "bt2020nc"
    else:
        matrix = "smpte170m" if is_sd(facts) else "bt709"
    full = rgb or facts.color_range == "pc" or str(facts.pixel_format or "").startswith("yuvj")
    return Colour(primaries, transfer, matrix, "pc" if full else "tv")


def keeps_hdr(video: VideoSpec | None, facts: InputFacts) -> bool:
    return video is not None and video.dynamic_range == "hdr" and source_colour(facts).hdr


def output_colour(video: VideoSpec | None, facts: InputFacts) -> Colour:
    """BT.709 limited range, or for an HDR input kept as HDR its own primaries and transfer (BT.2020 matrix)."""
    if not keeps_hdr(video, facts):
        return BT709
    src = source_colour(facts)
    return Colour(src.primaries, src.transfer, src.matrix if src.matrix in HDR_MATRICES else "bt2020nc", "tv")


def image_colour(fmt: str) -> Colour:
    """JPEG (JFIF) is BT.601 full range, WebP BT.601 limited range: what their decoders assume."""
    return Colour("bt709", "bt709", "smpte170m", "pc" if fmt == "jpeg" else "tv")


def colour_chain(src: Colour, dst: Colour, src_pix_fmt: str | None, pix_fmt: str) -> list[str]:
    """Filters from the decoded frames to `pix_fmt` in `dst`: tone mapping (HDR to SDR), a zscale conversion
    (other primaries, matrix or range), or only the pixel format (bit depth, chroma); nothing when the frames are
    already right. zscale gets the source's description explicitly: untagged frames would otherwise stop it."""
    if src.hdr and not dst.hdr:
        return [f"zscale={src.zscale_in()}:t=linear:npl={NOMINAL_PEAK}", "format=gbrpf32le",
                f"zscale=p={dst.primaries}", f"tonemap=tonemap={TONEMAP}:desat=0",
                f"zscale=t={dst.transfer}:m={dst.matrix}:r={dst.range}:d=error_diffusion", f"format={pix_fmt}"]
    if src != dst:
        return [f"zscale={src.zscale_in()}:p={dst.primaries}:t={dst.transfer}:m={dst.matrix}:r={dst.range}",
                f"format={pix_fmt}"]
    return [] if src_pix_fmt == pix_fmt else [f"format={pix_fmt}"]


# ---- pixel format and profile ------------------------------------------------------------------------------

# -profile:v per CPU encoder and pixel format. libx264/libx265 would derive these from the pixel format too; saying
# them makes the contract explicit (x265 has no 8-bit 4:2:2 profile: Main 4:2:2 10 covers it). SVT-AV1 only
# encodes Main (4:2:0, 8 or 10 bit): no option.
CPU_PROFILES: dict[str, dict[str, str]] = {
    "h264": {"yuv420p": "high", "yuv420p10le": "high10", "yuv422p": "high422", "yuv444p": "high444"},
    "h265": {"yuv420p": "main", "yuv420p10le": "main10", "yuv422p": "main422-10", "yuv444p": "main444-8"},
    "vp9": {"yuv420p": "0", "yuv422p": "1", "yuv444p": "1", "yuv420p10le": "2"},
}
# What NVENC encodes, per codec and requested pixel format: (the pixel format NVENC takes, profile). Anything else
# (4:2:2, 10-bit h264) is encoded on the CPU instead.
NVENC_FORMATS: dict[str, dict[str, tuple[str, str]]] = {
    "h264": {"yuv420p": ("yuv420p", "high"), "yuv444p": ("yuv444p", "high444p")},
    "h265": {"yuv420p": ("yuv420p", "main"), "yuv420p10le": ("p010le", "main10"), "yuv444p": ("yuv444p", "rext")},
    "av1": {"yuv420p": ("yuv420p", "main"), "yuv420p10le": ("p010le", "main")},
}


def pixel_format(video: VideoSpec | None, facts: InputFacts) -> str:
    """The spec's pixel format, else 8-bit 4:2:0, or 10-bit 4:2:0 for an HDR input kept as HDR."""
    if video is not None and video.pixel_format is not None:
        return video.pixel_format
    return "yuv420p10le" if keeps_hdr(video, facts) else "yuv420p"


def cpu_profile(codec: str, pix_fmt: str, crf: int | None) -> str | None:
    if codec == "h264" and crf == 0:
        return None  # lossless needs High 4:4:4 Predictive, which x264 picks itself
    return CPU_PROFILES.get(codec, {}).get(pix_fmt)


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def x265_hdr_params(facts: InputFacts) -> list[str]:
    """HDR10 static metadata for x265 (its units: chromaticity in 0.00002, luminance in 0.0001 cd/m2)."""
    params = []
    md = facts.mastering_display
    if md is not None:
        def xy(pair: list[float]) -> str:
            return f"({round(pair[0] * 50000)},{round(pair[1] * 50000)})"
        params.append(f"master-display=G{xy(md.green)}B{xy(md.blue)}R{xy(md.red)}WP{xy(md.white_point)}"
                      f"L({round(md.max_luminance * 10000)},{round(md.min_luminance * 10000)})")
    if facts.max_cll is not None:
        params.append(f"max-cll={facts.max_cll},{facts.max_fall or 0}")
    return params


def svtav1_hdr_params(facts: InputFacts) -> list[str]:
    """The same metadata for SVT-AV1 (plain numbers)."""
    params = []
    md: MasteringDisplay | None = facts.mastering_display
    if md is not None:
        def xy(pair: list[float]) -> str:
            return f"({_num(pair[0])},{_num(pair[1])})"
        params.append(f"mastering-display=G{xy(md.green)}B{xy(md.blue)}R{xy(md.red)}WP{xy(md.white_point)}"
                      f"L({_num(md.max_luminance)},{_num(md.min_luminance)})")
    if facts.max_cll is not None:
        params.append(f"content-light={facts.max_cll},{facts.max_fall or 0}")
    return params


# ---- geometry ----------------------------------------------------------------------------------------------


def even_floor(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def even_near(value: float) -> int:
    """The nearest even number (halves up), as ffmpeg's scale=-2 rounds."""
    return max(2, math.floor(value / 2 + 0.5) * 2)


def sample_aspect(facts: InputFacts) -> Fraction:
    match = re.fullmatch(r"([1-9][0-9]*):([1-9][0-9]*)", facts.sample_aspect_ratio or "")
    return Fraction(int(match.group(1)), int(match.group(2))) if match else Fraction(1)


def display_size(facts: InputFacts) -> tuple[float, float] | None:
    """The upright picture in square pixels: the non-square axis stretched (or shrunk) by the pixel aspect, the
    number of lines kept. `facts` width/height are already upright; a rotated input's pixels were turned too."""
    if not facts.width or not facts.height:
        return None
    sar = sample_aspect(facts)
    if facts.rotation in (90, 270):
        return float(facts.width), float(facts.height * sar)
    return float(facts.width * sar), float(facts.height)


def short_side_size(short: int, width: float, height: float) -> tuple[int, int]:
    """`short` on the short side, the long side keeping the aspect ratio (even)."""
    if width >= height:
        return even_near(short * width / height), short
    return short, even_near(short * height / width)


def aspect_size(width: float, height: float, aspect: AspectSpec) -> tuple[int, int]:
    """What ffmpeg_args.aspect_filters make of a square-pixel width x height (same expressions)."""
    num, den = (int(x) for x in aspect.ratio.split(":"))
    if aspect.mode == "crop":
        return even_floor(min(width, height * num / den)), even_floor(min(height, width * den / num))
    return even_floor(max(width, height * num / den)), even_floor(max(height, width * den / num))


def target_size(video: VideoSpec, width: float, height: float) -> tuple[int, int]:
    """Output size from the (square-pixel) source size: a named resolution is the short side; width and height
    are exact; one of them keeps the aspect ratio; neither keeps the size, rounded down to even."""
    if video.resolution is not None:
        return short_side_size(RESOLUTION_HEIGHTS[video.resolution], width, height)
    if video.width is not None and video.height is not None:
        return video.width, video.height
    if video.width is not None:
        return video.width, even_near(video.width * height / width)
    if video.height is not None:
        return even_near(video.height * width / height), video.height
    return even_floor(width), even_floor(height)


@dataclass(frozen=True)
class Geometry:
    filters: list[str]  # from the decoded (upright) frames to the output size, square pixels
    width: int | None  # the output size; None when the input's size is unknown
    height: int | None


def aspect_filters(aspect: AspectSpec) -> list[str]:
    """Center crop or pad to a display aspect ratio, keeping even sizes (encoders need them)."""
    num, den = (int(x) for x in aspect.ratio.split(":"))
    if aspect.mode == "crop":
        size = f"w='trunc(min(iw,ih*{num}/{den})/2)*2':h='trunc(min(ih,iw*{den}/{num})/2)*2'"
        return [f"crop={size}", "setsar=1"]
    size = f"w='trunc(max(iw,ih*{num}/{den})/2)*2':h='trunc(max(ih,iw*{den}/{num})/2)*2'"
    return [f"pad={size}:x='(ow-iw)/2':y='(oh-ih)/2':color=black", "setsar=1"]


def source_geometry(facts: InputFacts, aspect: AspectSpec | None) -> tuple[list[str], tuple[float, float] | None]:
    """The filters that make the picture square-pixel and crop/pad it to `aspect`, and the size they give (the
    display size when there is no aspect filter and no filter is needed)."""
    size = display_size(facts)
    if aspect is None:
        return [], size
    if size is None:
        return aspect_filters(aspect), None
    chain: list[str] = []
    width, height = size
    if sample_aspect(facts) != 1:
        width, height = even_floor(width), even_floor(height)
        chain += [f"scale={width}:{height}", "setsar=1"]
    return chain + aspect_filters(aspect), aspect_size(width, height, aspect)


def geometry(video: VideoSpec, facts: InputFacts, aspect: AspectSpec | None, *, on_gpu: bool = False) -> Geometry:
    """Filters to the output size with square pixels. No filter when the input already is that size; a crop of
    the odd line when only evenness is missing (sharper than resampling everything)."""
    chain, size = source_geometry(facts, aspect)
    scale = "scale_cuda" if on_gpu else "scale"
    if size is None:  # unknown input size: let ffmpeg keep the aspect ratio of the stored frame
        if video.resolution is not None:
            short = RESOLUTION_HEIGHTS[video.resolution]
            sizes = f"'if(gte(iw,ih),-2,{short})':'if(gte(iw,ih),{short},-2)'"
        else:
            sizes = f"{video.width or -2}:{video.height or -2}"
        keep = video.resolution is None and video.width is None and video.height is None
        return Geometry(chain if keep else [*chain, f"{scale}={sizes}", "setsar=1"], None, None)
    width, height = target_size(video, *size)
    if aspect is not None:
        if (width, height) != size:
            chain += [f"{scale}={width}:{height}", "setsar=1"]
        return Geometry(chain, width, height)
    square = sample_aspect(facts) == 1
    if square and (width, height) == (facts.width, facts.height):
        return Geometry([], width, height)
    if square and not on_gpu and (width, height) == (even_floor(facts.width or 0), even_floor(facts.height or 0)):
        return Geometry([f"crop={width}:{height}:0:0"], width, height)
    return Geometry([f"{scale}={width}:{height}", "setsar=1"], width, height)


# ---- time: fields and frame rate ---------------------------------------------------------------------------

DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=all"  # one progressive frame per interlaced frame
VFR_TOLERANCE = 0.02  # average vs base rate: closer than 2% is a constant rate with rounding in its timestamps
STANDARD_RATES: tuple[Fraction, ...] = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                                         Fraction(30), Fraction(50), Fraction(60000, 1001), Fraction(60))
MAX_BASE_RATE = 120  # a base rate above this is a timestamp grid (90 kHz...), not a frame rate


def deinterlaces(filters: FiltersSpec | None, facts: InputFacts) -> bool:
    """filters.deinterlace when set; otherwise whenever the probe says the input is interlaced."""
    if filters is not None and filters.deinterlace is not None:
        return filters.deinterlace
    return bool(facts.interlaced)


def constant_rate(facts: InputFacts) -> Fraction | None:
    """For a variable-frame-rate input, the constant rate its outputs get: the lowest whole fraction of the base
    rate (the grid every timestamp sits on) that is at least the average, so that on average no frame is
    dropped; for an implausible base rate, the lowest standard rate at least the average. None: not VFR."""
    if not facts.variable_frame_rate or not facts.frame_rate:
        return None
    average = Fraction(facts.frame_rate).limit_denominator(1001)
    base = Fraction(facts.base_frame_rate).limit_denominator(1001) if facts.base_frame_rate else None
    if base is not None and base <= MAX_BASE_RATE:
        k = max(1, math.floor(base / (average * (1 - VFR_TOLERANCE))))
        return base / k
    return next((r for r in STANDARD_RATES if r >= average * (1 - VFR_TOLERANCE)), STANDARD_RATES[-1])


def is_vfr(avg: float | None, base: float | None) -> bool | None:
    if not avg or not base:
        return None
    return abs(avg - base) > VFR_TOLERANCE * base


def rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def output_frame_rate(facts: InputFacts) -> float | None:
    """The frame rate of an output that does not set video.fps."""
    rate = constant_rate(facts)
    return float(rate) if rate is not None else facts.frame_rate
