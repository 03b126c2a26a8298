"""Reading user images into model-ready tensors, and writing images and grids.

Any file Pillow can open is accepted: grayscale, palette, RGBA/LA (composited on white),
CMYK, 16-bit and 32-bit integer or float images are converted to 8-bit RGB; EXIF rotation is
applied; each image is resized so its short side matches the model's resolution (Lanczos) and
centre-cropped. Files that are not images or are damaged are skipped with one warning that
lists them; images whose short side is under a quarter of the model's resolution (upscaled more
than 4x, so mostly blur) load with one warning that names them. Tensors are float32 in [-1, 1],
shape [3, S, S].

:func:`check_image_folder` and :func:`check_image_files` check the same inputs from the files'
headers alone, before a model is loaded (they need no resolution), so a typo costs no model load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import NoiseCLRError
from .fileio import atomic_write

log = logging.getLogger("noiseclr")

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image accepted (``--max-megapixels`` raises it): checked from the header, before any
pixel is decoded, so a small file that declares a huge canvas costs no memory. The models here
work at 128 to 1024 px, so 64 MP (8000 x 8000) is already far more than any edit uses."""

SMALL_IMAGE_FACTOR = 4
"""An image whose short side is below ``resolution / SMALL_IMAGE_FACTOR`` is upscaled more than
that much: it loads, with a warning (the model then sees mostly interpolation blur)."""


@dataclass
class ImageSet:
    """Images loaded from disk, ready for the VAE."""

    pixels: torch.Tensor
    """[N, 3, S, S] float32 in [-1, 1]."""
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    """(width, height) of each input as it is shown (EXIF orientation applied), before the centre
    crop: what pixel boxes (``#box=``) are given in. Empty when the pixels did not come from files."""

    def __len__(self) -> int:
        return len(self.paths)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (alpha composited on white, deep images rescaled)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow clips these to 0..255 on convert("L"); rescale by the type's range instead.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        if mode == "F":
            top = max(float(array.max()), 1.0) if array.max() > 1.0 else 1.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (Lanczos, up or down) and centre-crop to a square."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def tensor_to_pil(pixels: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL RGB."""
    array = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the limit."""


def _check_size(handle: Image.Image, max_pixels: int) -> None:
    width, height = handle.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} pixels = {width * height / 1e6:.0f} MP, over the {max_pixels / 1e6:g} MP limit; "
            "shrink it, or pass --max-megapixels to allow it"
        )


class _header_only:
    """Pillow with our size check instead of its bomb check (which only refuses above twice its
    limit, and warns below): ``Image.open`` reads headers only, so the check runs before decoding."""

    def __enter__(self):
        self.previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        return self

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.previous
        return False


def open_image(path: Path, min_side: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode ``path``; raises ``OSError``/``ValueError`` for non-images and
    :class:`ImageTooLarge` (a ``ValueError``) for images over ``max_pixels``, before decoding.

    Huge JPEGs are decoded at a reduced scale that still keeps both sides >= ``min_side``.
    """
    with _header_only(), Image.open(path) as handle:
        _check_size(handle, max_pixels)
        handle.draft("RGB", (min_side, min_side))
        handle.load()
        return handle.copy()


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def display_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as viewers show it (EXIF orientation applied), from its header."""
    with _header_only(), Image.open(path) as handle:
        width, height = handle.size
        orientation = handle.getexif().get(0x0112)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def _load_sized(path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, tuple[int, int]]:
    # The header's size, not the decoded one: huge JPEGs are decoded at a reduced scale (draft).
    image = to_rgb(open_image(path, min_side=size, max_pixels=max_pixels))
    return pil_to_tensor(fit_square(image, size)), display_size(path)


def _try_load(path: Path, size: int, max_pixels: int) -> tuple[torch.Tensor | None, str, tuple[int, int]]:
    try:
        tensor, original = _load_sized(path, size, max_pixels)
        return tensor, "", original
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        reason = "not an image" if isinstance(exc, Image.UnidentifiedImageError) else (str(exc) or "unreadable")
        return None, reason.splitlines()[0][:160], (0, 0)


def _warn_small(small: list[tuple[Path, tuple[int, int]]], size: int, flag: str) -> None:
    if not small:
        return
    least = max(1, size // SMALL_IMAGE_FACTOR)
    listing = ", ".join(f"{p.name} ({w}x{h})" for p, (w, h) in small[:20])
    more = f" and {len(small) - 20} more" if len(small) > 20 else ""
    log.warning(
        "%s: %d image(s) much smaller than the model's %d px, upscaled into blur: %s%s; "
        "use images with a short side of at least %d px (ideally %d)",
        flag,
        len(small),
        size,
        listing,
        more,
        least,
        size,
    )


def _is_small(original: tuple[int, int], size: int) -> bool:
    return min(original) * SMALL_IMAGE_FACTOR < size


def _image_header(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """'' when Pillow recognises ``path`` as an image of at most ``max_pixels`` from its header (no
    decoding), else why not."""
    try:
        with _header_only(), Image.open(path) as handle:
            _check_size(handle, max_pixels)
            return ""
    except Image.UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError) as exc:
        return (str(exc) or "unreadable").splitlines()[0][:160]


def _folder_candidates(folder: Path, min_count: int, flag: str) -> list[Path]:
    if not folder.exists():
        raise NoiseCLRError(f"{flag} {folder}: no such folder; pass a folder of images.")
    if not folder.is_dir():
        raise NoiseCLRError(f"{flag} {folder}: not a folder; pass a folder of images.")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    candidates = [p for p in entries if p.is_file()]  # follows links; a broken or looping one is not a file
    if not entries:
        raise NoiseCLRError(f"{flag} {folder}: the folder is empty; put at least {min_count} images in it.")
    if not candidates:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise NoiseCLRError(
            f"{flag} {folder}: holds no files, only {len(entries)} folder(s) or broken/looping link(s) ({shown}); "
            f"put at least {min_count} images directly in it."
        )
    return candidates


def _too_few(flag: str, kept: int, skipped: int, min_count: int) -> NoiseCLRError:
    return NoiseCLRError(
        f"{flag}: only {kept} usable image(s) (skipped {skipped}), need at least {min_count}; "
        "add images or lower --batch."
    )


def check_image_folder(
    folder: str | Path, *, min_count: int = 1, flag: str = "--images", max_pixels: int = DEFAULT_MAX_PIXELS
) -> int:
    """What :func:`load_image_folder` checks, from the files' headers alone (cheap, before any model
    is loaded): the folder exists and holds at least ``min_count`` files Pillow recognises as images.
    Returns that count. A file whose header is fine but whose pixels are damaged is found later."""
    folder = Path(folder)
    candidates = _folder_candidates(folder, min_count, flag)
    usable = sum(not _image_header(path, max_pixels) for path in candidates)
    if usable < min_count:
        raise _too_few(f"{flag} {folder}", usable, len(candidates) - usable, min_count)
    return usable


def _check_file(path: Path, flag: str) -> None:
    if path.is_dir():
        raise NoiseCLRError(f"{flag} {path}: is a folder; pass image files, e.g. {path / '*.png'}.")
    if not path.is_file():
        raise NoiseCLRError(f"{flag} {path}: no such file; check the path.")


def _unusable(flag: str, path: Path, reason: str) -> NoiseCLRError:
    if "MP limit" in reason:  # _check_size's message already says what to do
        return NoiseCLRError(f"{flag} {path}: {reason}.")
    return NoiseCLRError(f"{flag} {path}: cannot read it as an image ({reason}); pass a PNG, JPEG or similar.")


def check_image_files(
    paths: Sequence[str | Path], *, flag: str = "--image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """What :func:`load_image_files` checks, from the files' headers alone (before any model is loaded)."""
    if not paths:
        raise NoiseCLRError(f"{flag}: no images given; pass at least one image file.")
    for raw in paths:
        path = Path(raw)
        _check_file(path, flag)
        reason = _image_header(path, max_pixels)
        if reason:
            raise _unusable(flag, path, reason)


def load_image_folder(
    folder: str | Path, size: int, *, min_count: int = 1, flag: str = "--images", max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageSet:
    """All readable images directly in ``folder`` (sorted by name; hidden files ignored)."""
    folder = Path(folder)
    candidates = _folder_candidates(folder, min_count, flag)
    return _load_many(candidates, size, min_count=min_count, flag=f"{flag} {folder}", max_pixels=max_pixels)


def load_image_files(
    paths: Sequence[str | Path], size: int, *, flag: str = "--image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageSet:
    """Explicitly named images: a missing or unreadable one is an error, not a warning. A folder is
    refused too (name its files): the edit outputs are named after each input file."""
    if not paths:
        raise NoiseCLRError(f"{flag}: no images given; pass at least one image file.")
    tensors, kept, small, sizes = [], [], [], []
    for raw in paths:
        path = Path(raw)
        _check_file(path, flag)
        tensor, reason, original = _try_load(path, size, max_pixels)
        if tensor is None:
            raise _unusable(flag, path, reason)
        tensors.append(tensor)
        kept.append(path)
        sizes.append(original)
        if _is_small(original, size):
            small.append((path, original))
    _warn_small(small, size, flag)
    return ImageSet(torch.stack(tensors), kept, sizes=sizes)


def _load_many(candidates: list[Path], size: int, *, min_count: int, flag: str, max_pixels: int) -> ImageSet:
    from tqdm.auto import tqdm

    tensors, kept, skipped, small, sizes = [], [], [], [], []
    for path in tqdm(candidates, desc="reading images", unit="img", leave=False, disable=len(candidates) < 50):
        tensor, reason, original = _try_load(path, size, max_pixels)
        if tensor is None:
            skipped.append((path, reason))
        else:
            tensors.append(tensor)
            kept.append(path)
            sizes.append(original)
            if _is_small(original, size):
                small.append((path, original))
    if skipped:
        listing = "; ".join(f"{p.name} ({why})" for p, why in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        log.warning("skipped %d unreadable file(s) in %s: %s%s", len(skipped), flag, listing, more)
    if len(kept) < min_count:
        raise _too_few(flag, len(kept), len(skipped), min_count)
    _warn_small(small, size, flag)
    return ImageSet(torch.stack(tensors), kept, skipped, sizes)


def image_fingerprint(pixels: torch.Tensor) -> dict[str, str]:
    """sha256 digests of an image set [M, 3, S, S] as the model sees it (after resizing), each image
    quantised to 8 bits so float noise never matters: ``sha256`` of the SET (sorted per-image
    digests: file names and order do not count) and ``order_sha256`` of the sequence (order counts:
    it decides which image each random draw picks)."""
    quantised = ((pixels.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    digests = [hashlib.sha256(image.contiguous().numpy().tobytes()).hexdigest() for image in quantised]
    return {
        "sha256": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest(),
        "order_sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
    }


# --------------------------------------------------------------------- writing
def save_image(image: Image.Image | torch.Tensor, path: str | Path) -> Path:
    """Write a PNG atomically."""
    pil = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def make_grid(
    rows: Sequence[Sequence[Image.Image]],
    *,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 4,
) -> Image.Image:
    """Paste a table of equally sized images onto one canvas, with optional labels."""
    if not rows or not rows[0]:
        raise ValueError("make_grid needs at least one image")
    cell_w, cell_h = rows[0][0].size
    font_px = max(10, min(16, cell_h // 6))
    font = _font(font_px)
    text_h = font_px + 6
    left = (max(len(label) for label in row_labels) * font_px * 0.6 + 2 * pad) if row_labels else 0
    left = int(left)
    columns = max(len(r) for r in rows)
    width = left + columns * (cell_w + pad) + pad
    title_lines = wrap_text(title, font, width - 2 * pad) if title else []
    top = (text_h if column_labels else 0) + len(title_lines) * text_h + (2 if title_lines else 0)
    height = top + len(rows) * (cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y0 = pad
    for line in title_lines:
        draw.text((pad, y0), line, fill=(0, 0, 0), font=font)
        y0 += text_h
    y0 += 2 if title_lines else 0
    if column_labels:
        for c, label in enumerate(column_labels):
            draw.text((left + pad + c * (cell_w + pad), y0), label, fill=(60, 60, 60), font=font)
    for r, row in enumerate(rows):
        y = top + pad + r * (cell_h + pad)
        if row_labels:
            draw.text((pad, y + cell_h // 2 - font_px // 2), row_labels[r], fill=(60, 60, 60), font=font)
        for c, image in enumerate(row):
            canvas.paste(image.convert("RGB").resize((cell_w, cell_h)), (left + pad + c * (cell_w + pad), y))
    return canvas


def wrap_text(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels in ``font`` (a single word
    wider than that is cut), so a long title stays inside its image."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: list[str] = []
    for word in text.split():
        while measure(word, font=font) > width and len(word) > 1:
            cut = max(1, int(len(word) * width / measure(word, font=font)))
            lines.append(word[:cut])
            word = word[cut:]
        if lines and measure(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
