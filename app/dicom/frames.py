"""Where each frame of Pixel Data lies in a stored object (PS3.5 §8.2 and Annex A.4), so a
frame is served with ranged reads computed from the index alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Size of an item header (tag + length) in an encapsulated sequence, PS3.5 §A.4.
ITEM_HEADER = 8


@dataclass(frozen=True)
class PixelInfo:
    offset: int
    length: int | None
    encapsulated: bool
    fragment_offsets: Sequence[int]
    fragment_lengths: Sequence[int]
    basic_offset_table: Sequence[int]
    number_of_frames: int
    rows: int | None
    columns: int | None
    samples_per_pixel: int | None
    bits_allocated: int | None
    #: Fragments opening a codestream (see app.dicom.header.PixelLayout.frame_starts).
    frame_starts: Sequence[int] = ()


#: One frame: the (offset, length) byte ranges whose concatenation is the frame.
Frame = list[tuple[int, int]]


def frame_ranges(info: PixelInfo) -> list[Frame] | None:
    """Every frame's byte ranges, or None when they cannot be known from the index alone
    (encapsulated data with more fragments than frames, no Basic Offset Table, and
    codestream markers that do not tell the frames apart).

    >>> native = PixelInfo(1000, 24, False, [], [], [], 3, 2, 2, 1, 16)
    >>> frame_ranges(native)
    [[(1000, 8)], [(1008, 8)], [(1016, 8)]]
    """
    if not info.encapsulated:
        return _native(info)
    fragments = list(zip(info.fragment_offsets, info.fragment_lengths, strict=True))
    frames = max(info.number_of_frames, 1)
    if frames == 1:
        return [fragments]
    if len(fragments) == frames:
        return [[f] for f in fragments]
    if len(info.basic_offset_table) == frames and fragments:
        return _by_offset_table(fragments, info.basic_offset_table)
    starts = list(info.frame_starts)
    if len(starts) == frames and starts[0] == 0:
        ends = [*starts[1:], len(fragments)]
        return [fragments[a:b] for a, b in zip(starts, ends, strict=True)]
    return None


def _native(info: PixelInfo) -> list[Frame] | None:
    if not (info.rows and info.columns and info.bits_allocated and info.length is not None):
        return None
    bits = info.rows * info.columns * (info.samples_per_pixel or 1) * info.bits_allocated
    if bits % 8:
        return None  # 1-bit frames that do not end on a byte boundary
    size = bits // 8
    frames = max(info.number_of_frames, 1)
    if size * frames > info.length:
        return None
    return [[(info.offset + i * size, size)] for i in range(frames)]


def _by_offset_table(fragments: list[tuple[int, int]], table: Sequence[int]) -> list[Frame] | None:
    # BOT entries count from the first fragment's item header (PS3.5 §A.4).
    origin = fragments[0][0] - ITEM_HEADER
    starts = list(table)
    if starts[0] != 0 or starts != sorted(starts):
        return None
    frames: list[Frame] = [[] for _ in starts]
    index = 0
    for offset, length in fragments:
        position = offset - ITEM_HEADER - origin
        while index + 1 < len(starts) and position >= starts[index + 1]:
            index += 1
        frames[index].append((offset, length))
    return frames if all(frames) else None
