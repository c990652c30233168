"""TFRecord framing read in Python: every record checked, corrupt ones skipped.

A TFRecord file is a sequence of frames: `uint64 length` (little endian),
`uint32 masked_crc32c(length bytes)`, `length` data bytes, `uint32
masked_crc32c(data)`. `tf.data.TFRecordDataset` checks both CRCs, but on the
first bad frame it gives up on the whole file (it moves to the next file so
that `ignore_errors` does not loop), so every record after a corrupt one is
lost, and it cannot be told to start at a byte offset inside a file. This
module is what we had to write ourselves for that:

- `scan_headers` walks the length headers only (12 bytes read per record,
  the length CRC checked) and says where the framing of a shard first breaks.
  The input pipeline runs it on every shard before reading (cheap: no data
  is read).
- `iter_frames` reads a shard frame by frame with both CRCs checked and,
  after a bad frame, goes on: a frame whose length header is valid but whose
  data CRC fails is skipped by its (trusted) length; a frame whose length
  header is corrupt is skipped by resynchronising on the next offset holding
  a valid header (length CRC matching and the frame fitting in the file),
  searched with numpy over the bytes in between. The bytes between two valid
  frames count as exactly one bad record, so the indices of the records
  after it are those they were written with when one record was damaged.
  A false resynchronisation needs a random 12 bytes to pass a 32-bit CRC
  (about 2**-32 per byte offset) and the data CRC after it.

The pipeline (`pipeline.py`) reads clean shards with `TFRecordDataset` (no
Python per record) and hands only the rest of a corrupt shard, from the first
bad record on, to `iter_frames` (one Python call per record of that shard).
CRC32C is `google-crc32c` (C implementation, hardware accelerated).
"""

import collections
import struct

import google_crc32c
import numpy as np
import tensorflow as tf

HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length
FOOTER_BYTES = 4  # uint32 masked crc of the data
_MASK_DELTA = 0xA282EAD8
_SEARCH_CHUNK = 1 << 20

# Kinds of bad frames (check_records adds the kinds of bad contents).
TRUNCATED = "truncated"
BAD_LENGTH_CRC = "bad_length_crc"
BAD_DATA_CRC = "bad_data_crc"

KIND_TEXT = {
    TRUNCATED: "truncated file",
    BAD_LENGTH_CRC: "bad CRC of the length header",
    BAD_DATA_CRC: "bad CRC of the data",
}

Frame = collections.namedtuple("Frame", "index offset data kind detail")
"""One frame: `data` is the record (bytes) or None when `kind` names the problem."""


def masked_crc32c(data):
    """TFRecord's masked CRC32C of `data` (bytes)."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _valid_header(header):
    (crc,) = struct.unpack_from("<I", header, 8)
    return masked_crc32c(header[:8]) == crc


def _size(path):
    return tf.io.gfile.stat(path).length


def scan_headers(path):
    """`(count, kind, detail)`: records before the first framing problem, and it.

    `kind` is None for a shard whose every length header is valid and whose
    frames end exactly at the end of the file, else TRUNCATED or
    BAD_LENGTH_CRC for record `count`. Data CRCs are not checked (no data is
    read).
    """
    size = _size(path)
    count = offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            if size - offset < HEADER_BYTES:
                return count, TRUNCATED, f"{size - offset} bytes left, a header is 12"
            f.seek(offset)
            header = f.read(HEADER_BYTES)
            if not _valid_header(header):
                return count, BAD_LENGTH_CRC, f"at byte {offset}"
            (length,) = struct.unpack_from("<Q", header)
            end = offset + HEADER_BYTES + length + FOOTER_BYTES
            if end > size:
                return count, TRUNCATED, f"needs {end - size} more bytes"
            offset = end
            count += 1
    return count, None, None


def _find_header(f, start, size):
    """Offset >= `start` of the next valid frame header, or None."""
    pos = start
    while size - pos >= HEADER_BYTES + FOOTER_BYTES:
        f.seek(pos)
        chunk = f.read(min(_SEARCH_CHUNK, size - pos))
        positions = []
        last = len(chunk) - HEADER_BYTES  # last position with a whole header
        for r in range(8):
            n = (len(chunk) - r) // 8
            lengths = np.frombuffer(chunk, "<u8", count=n, offset=r)
            q = r + 8 * np.arange(n, dtype=np.int64)
            room = (size - pos) - q - (HEADER_BYTES + FOOTER_BYTES)
            fits = (q <= last) & (room >= 0)
            fits[fits] &= lengths[fits] <= room[fits].astype(np.uint64)
            positions.append(q[fits])
        for q in np.sort(np.concatenate(positions)):
            q = int(q)
            if _valid_header(chunk[q : q + HEADER_BYTES]):
                return pos + q
        if pos + len(chunk) >= size:
            return None
        pos += len(chunk) - (HEADER_BYTES - 1)
    return None


def iter_frames(path, start_index=0):
    """Yields a `Frame` per record of `path` from record `start_index` on.

    Records before `start_index` are passed over by their length headers
    (their data is not read nor checked). Bad frames are yielded with
    `data=None` and their kind; reading goes on after them (see above).
    """
    size = _size(path)
    index = offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            checking = index >= start_index
            if size - offset < HEADER_BYTES:
                detail = f"{size - offset} stray bytes at the end"
                yield Frame(index, offset, None, TRUNCATED, detail)
                return
            f.seek(offset)
            header = f.read(HEADER_BYTES)
            if not _valid_header(header):
                following = _find_header(f, offset + 1, size)
                if checking:
                    end = size if following is None else following
                    detail = f"bytes {offset}-{end} skipped"
                    yield Frame(index, offset, None, BAD_LENGTH_CRC, detail)
                if following is None:
                    return
                offset, index = following, index + 1
                continue
            (length,) = struct.unpack_from("<Q", header)
            end = offset + HEADER_BYTES + length + FOOTER_BYTES
            if end > size:
                detail = f"needs {end - size} more bytes"
                yield Frame(index, offset, None, TRUNCATED, detail)
                return
            if checking:
                body = f.read(length + FOOTER_BYTES)
                data = body[:length]
                (crc,) = struct.unpack_from("<I", body, length)
                if masked_crc32c(data) == crc:
                    yield Frame(index, offset, data, None, None)
                else:
                    yield Frame(index, offset, None, BAD_DATA_CRC, f"at byte {offset}")
            offset, index = end, index + 1


def describe(path, frame):
    """One line naming the shard, the record index and what is wrong with it."""
    return (
        f"bad record: shard {path} record {frame.index}: "
        f"{KIND_TEXT.get(frame.kind, frame.kind)} ({frame.detail})"
    )
