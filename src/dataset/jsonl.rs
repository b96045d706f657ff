//! JSONL bytes in and out: decompression, chunking at line boundaries, recompression.
//!
//! A file is read as a stream of chunks of whole lines, so a worker can judge a chunk on
//! its own and memory stays bounded by the chunk size whatever the file's size. The raw
//! (still compressed) bytes are hashed as they are read. On the way out each chunk's kept
//! lines are compressed on their own into a complete gzip member or zstd frame: readers
//! treat the concatenation as one stream (multi-member gzip, multi-frame zstd), and
//! compression runs in parallel with everything else.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::digest::Sha256;
use super::Codec;

/// Longest line a reader will hold in memory before giving up on the file.
pub const MAX_LINE: usize = 256 << 20;

/// The raw file's digest and size, filled in as it is read.
#[derive(Debug, Default)]
pub struct RawStats {
    hasher: Sha256,
    pub bytes: u64,
}

/// A callback told how many raw bytes were just read (drives progress).
pub type OnRead = Arc<dyn Fn(u64) + Send + Sync>;

struct HashingReader {
    inner: File,
    stats: Arc<Mutex<RawStats>>,
    on_read: OnRead,
    /// Off for a re-read whose digest is already known (verification).
    hash: bool,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            if self.hash {
                stats.hasher.update(&buf[..n]);
            }
            stats.bytes += n as u64;
            drop(stats);
            (self.on_read)(n as u64);
        }
        Ok(n)
    }
}

/// Reads a JSONL file as chunks of whole lines.
pub struct LineReader {
    src: Box<dyn Read + Send>,
    stats: Arc<Mutex<RawStats>>,
    /// The start of a line that the previous chunk cut off.
    carry: Vec<u8>,
    /// Buffers of chunks already judged, handed back by `recycle`: reading into memory that
    /// is already initialized spares a memset and fresh pages for every chunk.
    spare: Vec<Vec<u8>>,
    /// The chunk size last asked for: a buffer grown far past it for a long line is freed
    /// rather than kept.
    size: usize,
    /// For a plain file, the bytes its size says are left to read: a chunk's buffer is no
    /// larger than they need (a file of a few lines does not get a zeroed megabyte).
    left: Option<u64>,
    eof: bool,
    chunks: u64,
}

/// Whole lines of one file; every line ends in `\n` except possibly the file's last.
pub struct Chunk {
    buf: Vec<u8>,
    len: usize,
    /// The first chunk of the file (its first line may carry a byte order mark).
    pub is_first: bool,
}

impl Chunk {
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl LineReader {
    /// Opens a file; `hash` says whether to compute its sha256 on the way (`finish`).
    pub fn open(path: &Path, codec: Codec, on_read: OnRead, hash: bool) -> io::Result<LineReader> {
        let stats = Arc::new(Mutex::new(RawStats::default()));
        let file = File::open(path)?;
        let left = match codec {
            Codec::None => Some(file.metadata()?.len()),
            _ => None,
        };
        let raw = HashingReader {
            inner: file,
            hash,
            stats: Arc::clone(&stats),
            on_read,
        };
        // Plain chunks are read straight into their own buffers (a buffer in between would
        // copy every byte once more); the decompressors read in small pieces and get one.
        let buffered = |raw| BufReader::with_capacity(1 << 20, raw);
        let src: Box<dyn Read + Send> = match codec {
            Codec::None => Box::new(raw),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered(raw))),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered(raw))?),
        };
        Ok(LineReader {
            src,
            stats,
            carry: Vec::new(),
            spare: Vec::new(),
            size: 0,
            left,
            eof: false,
            chunks: 0,
        })
    }

    /// The next chunk of about `size` bytes, cut after the last newline in it; `None` at
    /// the end. A line longer than `MAX_LINE` is an `InvalidData` error.
    pub fn next_chunk(&mut self, size: usize) -> io::Result<Option<Chunk>> {
        let size = size.max(1);
        self.size = size;
        if self.eof {
            // The last read took everything up to the end: no line was carried over.
            return Ok(None);
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        let mut target = size.max(self.carry.len() + size / 2);
        // A plain file's chunk holds at most one byte more than is left of it, so that the
        // read loop meets its end; once the file has grown past its size at the open, the
        // chunk size alone counts.
        if let Some(left) = self.left.filter(|&left| left > 0) {
            let need = usize::try_from(left).unwrap_or(usize::MAX);
            target = target.min(self.carry.len().saturating_add(need).saturating_add(1));
        }
        if buf.len() < target {
            buf.resize(target, 0);
        }
        buf[..self.carry.len()].copy_from_slice(&self.carry);
        let mut len = self.carry.len();
        self.carry.clear();
        // Where the newline search starts: the carry holds none, nor does what an earlier
        // round of a long line searched.
        let mut searched = len;
        loop {
            while !self.eof && len < target {
                match self.src.read(&mut buf[len..target]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        len += n;
                        self.left = self.left.map(|left| left.saturating_sub(n as u64));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.eof {
                break;
            }
            if let Some(nl) = memchr::memrchr(b'\n', &buf[searched..len]) {
                let nl = searched + nl;
                self.carry.extend_from_slice(&buf[nl + 1..len]);
                len = nl + 1;
                break;
            }
            if len > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {} MiB", MAX_LINE >> 20),
                ));
            }
            // One line longer than the chunk: read on until it ends.
            searched = len;
            target += size;
            buf.resize(target, 0);
        }
        if len == 0 {
            self.spare.push(buf);
            return Ok(None);
        }
        let is_first = self.chunks == 0;
        self.chunks += 1;
        Ok(Some(Chunk { buf, len, is_first }))
    }

    /// Hands a judged chunk's buffer back for the next `next_chunk`.
    pub fn recycle(&mut self, chunk: Chunk) {
        if chunk.buf.len() <= 2 * self.size {
            self.spare.push(chunk.buf);
        }
    }

    /// The raw file's sha256 (hex) and size. Only complete once `next_chunk` returned `None`.
    pub fn finish(self) -> (String, u64) {
        drop(self.src);
        let stats = Arc::try_unwrap(self.stats)
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .unwrap_or_default();
        (stats.hasher.hex(), stats.bytes)
    }
}

/// Iterates the lines of a chunk, each with its terminator.
pub fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// A line without its `\n` (a `\r` before it stays: JSON reads it as whitespace).
pub fn content(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Compresses one chunk's output as a complete member or frame of `codec`.
pub fn encode(codec: Codec, data: Vec<u8>) -> io::Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(data),
        Codec::Gzip => {
            let out = Vec::with_capacity(data.len() / 3);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(&data)?;
            enc.finish()
        }
        Codec::Zstd => zstd::bulk::compress(&data, zstd::DEFAULT_COMPRESSION_LEVEL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(bytes: &[u8], codec: Codec, size: usize) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, bytes).unwrap();
        let mut reader = LineReader::open(&path, codec, Arc::new(|_| {}), true).unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk(size).unwrap() {
            assert!(chunk.is_first == out.is_empty());
            out.push(chunk.data().to_vec());
            reader.recycle(chunk);
        }
        let (sha, n) = reader.finish();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(
            sha,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
        );
        out
    }

    #[test]
    fn chunks_hold_whole_lines_and_rebuild_the_input_at_any_size() {
        let mut text = Vec::new();
        for i in 0..200 {
            // Lines from 1 to ~600 bytes, one far longer than the smaller chunk sizes.
            let len = if i == 77 { 5000 } else { (i * 37) % 600 };
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        text.extend_from_slice(b"last line without newline");
        for size in [1, 7, 64, 1000, 4096, 1 << 20] {
            let chunks = chunks_of(&text, Codec::None, size);
            assert_eq!(chunks.concat(), text, "size {size}");
            for c in &chunks[..chunks.len() - 1] {
                assert_eq!(c.last(), Some(&b'\n'), "size {size}: a chunk ends mid-line");
            }
        }
    }

    #[test]
    fn a_plain_file_gets_buffers_no_larger_than_it_and_is_read_whole_if_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n").unwrap();
        let mut reader = LineReader::open(&path, Codec::None, Arc::new(|_| {}), true).unwrap();
        let only = reader.next_chunk(1 << 20).unwrap().unwrap();
        assert_eq!(only.data(), b"{\"n\":1}\n{\"n\":2}\n");
        assert!(only.buf.len() < 64, "a {}-byte buffer", only.buf.len());
        reader.recycle(only);
        assert!(reader.next_chunk(1 << 20).unwrap().is_none());

        // Lines appended between the open and the reads are read too, in chunks of the
        // size asked for, not of the size the file had.
        let mut reader = LineReader::open(&path, Codec::None, Arc::new(|_| {}), true).unwrap();
        let more: Vec<u8> = (3..2000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .chain(*b"{\"n\":0}")
            .collect();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&more).unwrap();
        let (mut all, mut chunks) = (Vec::new(), 0);
        while let Some(chunk) = reader.next_chunk(4096).unwrap() {
            all.extend_from_slice(chunk.data());
            chunks += 1;
            reader.recycle(chunk);
        }
        assert_eq!(&all[..16], b"{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(&all[16..], &more[..]);
        assert!(chunks <= 2 + all.len() / 2048, "{chunks} chunks");
        assert_eq!(reader.finish().1, all.len() as u64);
    }

    #[test]
    fn compressed_input_is_chunked_after_decompression_and_hashed_raw() {
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let mut gz = encode(Codec::Gzip, text[..10000].to_vec()).unwrap();
        gz.extend(encode(Codec::Gzip, text[10000..].to_vec()).unwrap());
        assert_eq!(chunks_of(&gz, Codec::Gzip, 999).concat(), text);
        let zst = encode(Codec::Zstd, text.clone()).unwrap();
        assert_eq!(chunks_of(&zst, Codec::Zstd, 999).concat(), text);
    }

    #[test]
    fn empty_file_has_no_chunks() {
        assert!(chunks_of(b"", Codec::None, 64).is_empty());
    }
}
