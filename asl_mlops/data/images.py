"""Image bytes to arrays: size checks from the header before decoding, PNG/JPEG decoding, base64.
"""

import base64
import binascii
from pathlib import Path

import numpy as np

from asl_mlops.data.sign_mnist import IMAGE_SIZE

#: Most pixels of one encoded image, read from its header before decoding (4096 x 4096 = 16.7 MP).
MAX_IMAGE_PIXELS = 4096 * 4096
#: Most bytes of one encoded image after base64 decoding.
MAX_IMAGE_BYTES = 16 * 1024 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
# JPEG start-of-frame markers carry the image size (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# --- encoded images -> 28x28 uint8 -----------------------------------------------------------------

def image_header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a PNG or JPEG header, without decoding; raises ValueError otherwise."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("truncated PNG (no IHDR header)")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ValueError("corrupt JPEG (bad marker)")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                return "jpeg", int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
            if marker == 0xDA or length < 2:  # start of scan before any frame header
                raise ValueError("corrupt JPEG (no frame header before the image data)")
            pos += 2 + length
        raise ValueError("truncated JPEG (no frame header)")
    raise ValueError("not a PNG or JPEG image")


def square_28(gray: np.ndarray) -> np.ndarray:
    """Pad a 2-D uint8 image to a centred square (edge replicate), then area-resize to 28x28."""
    import cv2

    height, width = gray.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = cv2.copyMakeBorder(gray, top, side - height - top, left, side - width - left, cv2.BORDER_REPLICATE)
    return cv2.resize(square, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def check_encoded_image(data: bytes) -> str:
    """The format ("png" or "jpeg") of bytes that are safe to decode: size limits from the header, no truncation
    (steps 2-3 of the decoding asl_mlops.recognizers.sign_mnist describes). Raises ValueError with a short reason;
    every decoder calls it first."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is {len(data)} bytes, more than the limit of {MAX_IMAGE_BYTES}")
    kind, width, height = image_header_size(data)
    if width < 1 or height < 1:
        raise ValueError(f"{kind.upper()} header declares an empty image ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image is {width}x{height} = {width * height} pixels, more than the limit of "
                         f"{MAX_IMAGE_PIXELS} (4096x4096)")
    if kind == "png" and not data.rstrip(b"\x00").endswith(_PNG_IEND):
        raise ValueError("truncated PNG (no IEND chunk at the end)")
    if kind == "jpeg":
        scan = data.find(b"\xff\xda")
        if scan < 0 or data.rfind(b"\xff\xd9") < scan:
            raise ValueError("truncated JPEG (no image data, or no end-of-image marker after it)")
    return kind


def decode_image(data: bytes) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> 28x28 uint8 gray image (steps 2-6 of the decoding asl_mlops.recognizers.sign_mnist
    describes).

    Raises ValueError with a short reason; callers add where the bytes came from.
    """
    import cv2

    kind = check_encoded_image(data)
    gray = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None or gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"{kind.upper()} data could not be decoded (corrupt file)")
    return square_28(gray)


def decode_base64_image(text: object) -> np.ndarray:
    """A base64 string of a PNG/JPEG -> 28x28 uint8 image; ValueError with a short reason."""
    return decode_image(base64_bytes(text))


def base64_bytes(text: object) -> bytes:
    """The bytes of a request's base64 `image` cell (at most MAX_IMAGE_BYTES); ValueError with a short reason."""
    if not isinstance(text, str):
        shown = "null" if text is None or (isinstance(text, float) and np.isnan(text)) else type(text).__name__
        raise ValueError(f"expected a base64-encoded PNG or JPEG string, got {shown}")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValueError(f"base64 text is longer than an image of {MAX_IMAGE_BYTES} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"not valid base64 ({err})") from None
    if not data:
        raise ValueError("empty image (no bytes after base64 decoding)")
    return data


def encode_image_file(path: str | Path) -> str:
    """Base64 text of an image file, as a request's `image` cell carries it."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")
