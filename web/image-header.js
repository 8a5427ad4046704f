// Width and height of an image file from its header alone, nothing decoded: a decompression bomb (a 0.5 MB PNG
// that decodes to 1.6 GB) is refused before the browser allocates its pixels. Formats: JPEG (the SOF frame header,
// found by skipping the APPn/EXIF/ICC/COM segments before it), PNG (IHDR), WebP (VP8, VP8L, VP8X), GIF, BMP.
// Works in a page or a worker; reads only the few bytes it needs (Blob.slice).

const FORMATS = [
  { format: 'png', matches: (b) => startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), read: pngSize },
  { format: 'jpeg', matches: (b) => startsWith(b, [0xff, 0xd8, 0xff]), read: jpegSize },
  { format: 'gif', matches: (b) => ascii(b, 0, 4) === 'GIF8', read: gifSize },
  { format: 'webp', matches: (b) => ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP', read: webpSize },
  { format: 'bmp', matches: (b) => ascii(b, 0, 2) === 'BM', read: bmpSize },
];
export const SUPPORTED_FORMATS = 'JPEG, PNG, WebP, GIF or BMP';

// JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): C0-CF except DHT C4, JPG C8, DAC CC.
const JPEG_FRAME_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
const JPEG_MAX_SEGMENTS = 4096;  // a real file has a few dozen; stops a crafted endless chain of empty segments

class TruncatedHeader extends Error {}

// Reads byte ranges of a Blob; the first 64 KB are read once, as most headers lie there.
class ByteReader {
  constructor(blob) {
    this.blob = blob;
    this.head = null;
  }

  async view(offset, length) {
    if (!this.head) this.head = new Uint8Array(await this.blob.slice(0, 65536).arrayBuffer());
    const bytes = offset + length <= this.head.length ? this.head.subarray(offset, offset + length)
      : new Uint8Array(await this.blob.slice(offset, offset + length).arrayBuffer());
    if (bytes.length < length) throw new TruncatedHeader(`the file ends at byte ${offset + bytes.length}`);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}

// {format, width, height} of `blob`; width and height are null when the format is known but its header is cut
// short or inconsistent (a corrupt file); null when the format is none of SUPPORTED_FORMATS.
export async function readImageSize(blob) {
  const reader = new ByteReader(blob);
  const first = await reader.view(0, Math.min(blob.size, 16)).catch(() => null);
  const bytes = first ? new Uint8Array(first.buffer, first.byteOffset, first.byteLength) : new Uint8Array(0);
  const known = FORMATS.find(({ matches }) => matches(bytes));
  if (!known) return null;
  try {
    const size = await known.read(reader);
    if (size && size.width > 0 && size.height > 0) return { format: known.format, ...size };
  } catch (error) {
    if (!(error instanceof TruncatedHeader)) throw error;
  }
  return { format: known.format, width: null, height: null };
}

async function pngSize(reader) {
  const header = await reader.view(12, 12);  // chunk type, then IHDR's width and height (big-endian)
  if (asciiOf(header, 0, 4) !== 'IHDR') return null;
  return { width: header.getUint32(4), height: header.getUint32(8) };
}

async function jpegSize(reader) {
  let offset = 2;  // after SOI
  for (let segment = 0; segment < JPEG_MAX_SEGMENTS; segment += 1) {
    const marker = await reader.view(offset, 2);
    if (marker.getUint8(0) !== 0xff) return null;
    const type = marker.getUint8(1);
    if (type === 0xff) { offset += 1; continue; }  // fill byte before a marker
    if (type === 0x01 || (type >= 0xd0 && type <= 0xd7)) { offset += 2; continue; }  // markers without a length
    if (type === 0xd9 || type === 0xda) return null;  // end of image or scan data before any frame header
    if (JPEG_FRAME_MARKERS.has(type)) {
      const frame = await reader.view(offset + 5, 4);  // after length (2) and precision (1): height, width
      return { height: frame.getUint16(0), width: frame.getUint16(2) };
    }
    offset += 2 + (await reader.view(offset + 2, 2)).getUint16(0);  // APPn (EXIF, ICC, XMP), DQT, COM...
  }
  return null;
}

// Chromium enlarges the logical screen to fit the first frame, so both count.
async function gifSize(reader) {
  const screen = await reader.view(6, 5);
  const size = { width: screen.getUint16(0, true), height: screen.getUint16(2, true) };
  const flags = screen.getUint8(4);
  let offset = 13 + (flags & 0x80 ? 3 * 2 ** ((flags & 0x07) + 1) : 0);  // after the global colour table
  for (;;) {
    const block = (await reader.view(offset, 1)).getUint8(0);
    if (block === 0x2c) {  // image descriptor: left, top, width, height (little-endian)
      const frame = await reader.view(offset + 1, 8);
      return { width: Math.max(size.width, frame.getUint16(0, true) + frame.getUint16(4, true)),
        height: Math.max(size.height, frame.getUint16(2, true) + frame.getUint16(6, true)) };
    }
    if (block !== 0x21) return size;  // trailer or garbage: no frame to enlarge the screen
    offset += 2;  // extension introducer and label, then data sub-blocks up to an empty one
    for (let length = -1; length !== 0; offset += 1 + length) length = (await reader.view(offset, 1)).getUint8(0);
  }
}

async function webpSize(reader) {
  const chunk = await reader.view(12, 18);  // first chunk's type, length, then its data
  const type = asciiOf(chunk, 0, 4);
  if (type === 'VP8 ') {  // lossy: frame tag (3), start code 9d 01 2a, 14-bit width and height
    if (chunk.getUint8(11) !== 0x9d || chunk.getUint8(12) !== 0x01 || chunk.getUint8(13) !== 0x2a) return null;
    return { width: chunk.getUint16(14, true) & 0x3fff, height: chunk.getUint16(16, true) & 0x3fff };
  }
  if (type === 'VP8L') {  // lossless: signature 0x2f, then width-1 and height-1 in 14 bits each
    if (chunk.getUint8(8) !== 0x2f) return null;
    const bits = chunk.getUint32(9, true);
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (type === 'VP8X') {  // extended: flags (4 bytes), then canvas width-1 and height-1 in 24 bits each
    const uint24 = (at) => chunk.getUint8(at) | (chunk.getUint8(at + 1) << 8) | (chunk.getUint8(at + 2) << 16);
    return { width: uint24(12) + 1, height: uint24(15) + 1 };
  }
  return null;
}

async function bmpSize(reader) {
  const header = await reader.view(14, 12);
  if (header.getUint32(0, true) === 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    return { width: header.getUint16(4, true), height: header.getUint16(6, true) };
  }
  // height is negative for top-down bitmaps
  return { width: Math.abs(header.getInt32(4, true)), height: Math.abs(header.getInt32(8, true)) };
}

function startsWith(bytes, prefix) {
  return prefix.every((value, index) => bytes[index] === value);
}

function ascii(bytes, start, length) {
  return String.fromCharCode(...bytes.subarray(start, start + length));
}

function asciiOf(view, start, length) {
  return ascii(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), start, length);
}
