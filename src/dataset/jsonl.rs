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

use sha2::{Digest, Sha256};

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
    carry: Vec<u8>,
    eof: bool,
    chunks: u64,
}

/// Whole lines of one file; every line ends in `\n` except possibly the file's last.
pub struct Chunk {
    pub data: Vec<u8>,
    /// The first chunk of the file (its first line may carry a byte order mark).
    pub is_first: bool,
}

impl LineReader {
    /// Opens a file; `hash` says whether to compute its sha256 on the way (`finish`).
    pub fn open(path: &Path, codec: Codec, on_read: OnRead, hash: bool) -> io::Result<LineReader> {
        let stats = Arc::new(Mutex::new(RawStats::default()));
        let raw = HashingReader {
            inner: File::open(path)?,
            hash,
            stats: Arc::clone(&stats),
            on_read,
        };
        let buffered = BufReader::with_capacity(1 << 20, raw);
        let src: Box<dyn Read + Send> = match codec {
            Codec::None => Box::new(buffered),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        };
        Ok(LineReader {
            src,
            stats,
            carry: Vec::new(),
            eof: false,
            chunks: 0,
        })
    }

    /// The next chunk of about `size` bytes, cut after the last newline in it; `None` at
    /// the end. A line longer than `MAX_LINE` is an `InvalidData` error.
    pub fn next_chunk(&mut self, size: usize) -> io::Result<Option<Chunk>> {
        let mut data = Vec::with_capacity(size + self.carry.len() + 1024);
        data.append(&mut self.carry);
        let mut target = size;
        loop {
            if !self.eof && data.len() < target {
                let want = (target - data.len()) as u64;
                let n = (&mut self.src).take(want).read_to_end(&mut data)?;
                self.eof = (n as u64) < want;
            }
            if self.eof {
                break;
            }
            if let Some(nl) = memchr::memrchr(b'\n', &data) {
                self.carry.extend_from_slice(&data[nl + 1..]);
                data.truncate(nl + 1);
                break;
            }
            if data.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {} MiB", MAX_LINE >> 20),
                ));
            }
            // One line longer than the chunk: read on until it ends.
            target += size;
        }
        if data.is_empty() {
            return Ok(None);
        }
        let is_first = self.chunks == 0;
        self.chunks += 1;
        Ok(Some(Chunk { data, is_first }))
    }

    /// The raw file's sha256 (hex) and size. Only complete once `next_chunk` returned `None`.
    pub fn finish(self) -> (String, u64) {
        drop(self.src);
        let stats = Arc::try_unwrap(self.stats)
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .unwrap_or_default();
        (hex::encode(stats.hasher.finalize()), stats.bytes)
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
