//! Rows removed from a flat byte-array column inside its pages, without Arrow.
//!
//! Most of a training set's bytes sit in one or two long text columns, which writers store
//! PLAIN once their dictionary overflows. Decoding such a column into Arrow arrays and
//! encoding it again copies every value three times and takes fresh buffers for every page;
//! here each page is decompressed, the values of the kept rows are copied once into the
//! new page, and that page is compressed with the column's codec. A PLAIN page that keeps
//! every row is not compressed again: its stored body is written as it was read (what
//! makes a sparse erasure cheap, as compression is most of a rewrite's cost). The column chunk's
//! statistics, size statistics and page index are computed from the kept values as the
//! `parquet` crate's writer computes them, so the chunk reads as if that writer had written
//! it. Columns this module does not take (nested, dictionary-encoded on output, with bloom
//! filters, other encodings or codecs) go through Arrow.

use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::basic::{
    BoundaryOrder, Compression, ConvertedType, Encoding, EncodingMask, LogicalType, PageType,
    SortOrder, Type,
};
use parquet::column::page::{CompressedPage, Page, PageReader, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, ColumnDescriptor};

use crate::exec;

/// Whether the column chunk `chunk` (of column `descr`) can be rewritten here with the
/// output properties `props`: a top-level byte-array column, neither repeated nor nested,
/// whose pages hold PLAIN or dictionary-coded values and RLE levels, written on output
/// without a dictionary or a bloom filter, in a codec this module writes.
pub fn takes(
    descr: &ColumnDescriptor,
    chunk: &ColumnChunkMetaData,
    props: &WriterProperties,
) -> bool {
    let path = descr.path();
    let decimal = matches!(descr.logical_type_ref(), Some(LogicalType::Decimal { .. }))
        || descr.converted_type() == ConvertedType::DECIMAL;
    let encodings_ok = chunk.encodings().all(|e| {
        matches!(
            e,
            Encoding::PLAIN | Encoding::RLE | Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
        )
    });
    descr.physical_type() == Type::BYTE_ARRAY
        && path.parts().len() == 1
        && descr.max_rep_level() == 0
        && descr.max_def_level() <= 1
        && !decimal
        && descr.sort_order() == SortOrder::UNSIGNED
        && encodings_ok
        && chunk.bloom_filter_offset().is_none()
        && !props.dictionary_enabled(path)
        && props.bloom_filter_properties(path).is_none()
        && props.statistics_enabled(path) == EnabledStatistics::Page
        && props.writer_version() == WriterVersion::PARQUET_1_0
        && Codec::new(props.compression(path)).is_some()
}

/// A rewritten column chunk: its bytes (pages from offset 0) and what the row group writer
/// needs to splice them in.
pub struct Rewritten {
    pub data: Bytes,
    pub close: ColumnCloseResult,
}

/// Why a rewrite here did not happen.
#[derive(Debug)]
pub enum Failed {
    /// The chunk holds something this module does not rewrite (found only once reading it):
    /// the caller rewrites it through Arrow instead.
    Unsupported(String),
    /// The chunk is damaged.
    Corrupt(String),
}

impl From<parquet::errors::ParquetError> for Failed {
    fn from(e: parquet::errors::ParquetError) -> Failed {
        Failed::Corrupt(e.to_string())
    }
}

/// Rewrites the column chunk `chunk`, read from `file` one page at a time, keeping the rows
/// `keep` marks (one per row of its row group).
pub fn rewrite<R: ChunkReader + 'static>(
    file: Arc<R>,
    chunk: &ColumnChunkMetaData,
    keep: &[bool],
    props: &WriterProperties,
) -> Result<Rewritten, Failed> {
    let descr = chunk.column_descr_ptr();
    let compression = props.compression(descr.path());
    let codec = Codec::new(compression)
        .ok_or_else(|| Failed::Unsupported(format!("codec {compression:?}")))?;
    // The rewrite is about the size of the chunk it comes from (which the untrusted footer
    // may overstate, but not beyond the file).
    let room = u64::try_from(chunk.compressed_size())
        .unwrap_or(0)
        .min(file.len())
        .saturating_add(64 << 10);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let tap = Arc::new(Tap {
        file,
        last: Mutex::new(None),
    });
    let pages = SerializedPageReader::new(tap.clone(), chunk, keep.len(), None)?;
    // Stored bodies are reused when the input's codec is the output's (at whatever level).
    let same_codec =
        std::mem::discriminant(&chunk.compression()) == std::mem::discriminant(&compression);

    let mut source = Source {
        pages,
        tap,
        reuse: same_codec.then_some(codec),
        keep,
        row: 0,
        optional: descr.max_def_level() == 1,
        dictionary: None,
        levels: Vec::new(),
        indices: Vec::new(),
        done: false,
    };
    let mut chunk = Chunk::new(descr, props);
    let mut written = Written::new(room);
    // A few pages at a time: while they are compressed (by idle workers too), the next
    // few are decompressed and filled, so that even a file of one row group keeps more
    // than one core busy.
    let batch = exec::workers().max(2);
    let mut ready = chunk.fill(&mut source, batch)?;
    while !ready.is_empty() {
        let (compressed, next) = exec::join(
            || {
                exec::par_map(&ready, |p| match &p.body {
                    Body::Filled { buf, begin } => codec.compress(&buf[*begin..]).map(Bytes::from),
                    Body::Stored { compressed, .. } => Ok(compressed.clone()),
                })
            },
            || chunk.fill(&mut source, batch),
        );
        written.write(ready, compressed)?;
        ready = next?;
    }
    chunk.finish(written)
}

/// The file a column chunk's pages are read from, holding on to the last range read whole.
/// The page reader reads a page's header, then its body as stored in one range, so once a
/// page comes out of it, that range is the page's compressed body.
struct Tap<R> {
    file: Arc<R>,
    last: Mutex<Option<Bytes>>,
}

impl<R> Tap<R> {
    fn take(&self) -> Option<Bytes> {
        self.last.lock().ok().and_then(|mut last| last.take())
    }
}

impl<R: ChunkReader> Length for Tap<R> {
    fn len(&self) -> u64 {
        self.file.len()
    }
}

impl<R: ChunkReader> ChunkReader for Tap<R> {
    type T = R::T;

    fn get_read(&self, start: u64) -> parquet::errors::Result<R::T> {
        self.file.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.file.get_bytes(start, length)?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(bytes.clone());
        }
        Ok(bytes)
    }
}

/// The input column chunk's pages, read one at a time into the output chunk.
struct Source<'a, R: ChunkReader> {
    pages: SerializedPageReader<Tap<R>>,
    tap: Arc<Tap<R>>,
    /// The codec stored page bodies are in, when they can be written again as they are.
    reuse: Option<Codec>,
    keep: &'a [bool],
    /// Rows of the row group read so far.
    row: usize,
    optional: bool,
    dictionary: Option<Dictionary>,
    levels: Vec<u32>,
    indices: Vec<u32>,
    done: bool,
}

impl<R: ChunkReader> Source<'_, R> {
    /// Adds the kept rows of the next data page to `out`; false once there is none left
    /// (and the pages held as many rows as the row group).
    fn next_page(&mut self, out: &mut Chunk<'_>) -> Result<bool, Failed> {
        let (page, stored) = loop {
            self.tap.take();
            match self.pages.get_next_page()? {
                None => {
                    if self.row != self.keep.len() {
                        return Err(corrupt(&format!(
                            "its pages hold {} rows where its row group has {}",
                            self.row,
                            self.keep.len()
                        )));
                    }
                    self.done = true;
                    return Ok(false);
                }
                Some(page) => {
                    let v1 = matches!(page, Page::DataPage { .. });
                    let stored = self.tap.take().filter(|_| v1);
                    match read(page, self.optional)? {
                        Read::Dictionary(d) => self.dictionary = Some(d),
                        Read::Data(page) => break (page, stored),
                    }
                }
            }
        };
        let n = page.rows;
        let keep = self
            .row
            .checked_add(n)
            .and_then(|end| self.keep.get(self.row..end))
            .ok_or_else(|| corrupt("its pages hold more rows than its row group"))?;
        let levels = &mut self.levels;
        levels.clear();
        if self.optional {
            decode_hybrid(&page.buf[page.levels.clone()], 1, n, levels)?;
        }
        let whole = page.encoding == Encoding::PLAIN && keep.iter().all(|&k| k);
        let reused = match (whole, self.reuse, stored) {
            (true, Some(codec), Some(stored)) if codec.holds(&stored, page.buf.len()) => {
                Some(stored)
            }
            _ => None,
        };
        if let Some(stored) = reused {
            out.push_stored(&page, levels, stored)?;
            self.row += n;
            return Ok(true);
        }
        let mut values = match page.encoding {
            Encoding::PLAIN => Values::Plain {
                buf: &page.buf,
                at: page.values,
            },
            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
                let dict = self
                    .dictionary
                    .as_ref()
                    .ok_or_else(|| corrupt("a dictionary-coded page has no dictionary"))?;
                let width = *page
                    .buf
                    .get(page.values)
                    .ok_or_else(|| corrupt("dictionary indices are truncated"))?;
                let present = n - levels.iter().filter(|&&l| l == 0).count();
                self.indices.clear();
                let coded = &page.buf[page.values + 1..];
                decode_hybrid(coded, u32::from(width), present, &mut self.indices)?;
                Values::Indexed {
                    dict,
                    indices: self.indices.iter(),
                }
            }
            other => return Err(Failed::Unsupported(format!("values in {other}"))),
        };
        for (i, &kept) in keep.iter().enumerate() {
            if self.optional && levels[i] == 0 {
                if kept {
                    out.push_null();
                }
                continue;
            }
            let value = values.next()?;
            if kept {
                out.push_encoded(value);
            }
        }
        self.row += n;
        Ok(true)
    }
}

fn corrupt(what: &str) -> Failed {
    Failed::Corrupt(format!("a column chunk is damaged: {what}"))
}

/// A data page, decompressed: its rows, how its values are encoded, and where its
/// definition levels and its values lie in `buf`.
struct DataPage {
    buf: Bytes,
    rows: usize,
    encoding: Encoding,
    levels: Range<usize>,
    values: usize,
}

enum Read {
    Dictionary(Dictionary),
    Data(DataPage),
}

/// Takes a page apart. Levels are the RLE hybrid, with a length before them in a v1 page;
/// a v2 page has repetition levels first, which a flat column has none of.
fn read(page: Page, optional: bool) -> Result<Read, Failed> {
    let bad = || corrupt("definition levels are truncated");
    match page {
        Page::DictionaryPage {
            buf,
            num_values,
            encoding,
            ..
        } => match encoding {
            Encoding::PLAIN | Encoding::PLAIN_DICTIONARY => Ok(Read::Dictionary(
                Dictionary::parse(buf, num_values as usize)?,
            )),
            other => Err(Failed::Unsupported(format!("dictionary page in {other}"))),
        },
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            ..
        } => {
            let levels = match optional {
                false => 0..0,
                true if def_level_encoding != Encoding::RLE => {
                    return Err(Failed::Unsupported(format!(
                        "definition levels in {def_level_encoding}"
                    )))
                }
                true => {
                    let len = le_u32(&buf, 0).ok_or_else(bad)? as usize;
                    4..4usize
                        .checked_add(len)
                        .filter(|&e| e <= buf.len())
                        .ok_or_else(bad)?
                }
            };
            let values = levels.end;
            Ok(Read::Data(DataPage {
                buf,
                rows: num_values as usize,
                encoding,
                levels,
                values,
            }))
        }
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            def_levels_byte_len,
            rep_levels_byte_len,
            ..
        } => {
            let start = rep_levels_byte_len as usize;
            let end = start
                .checked_add(def_levels_byte_len as usize)
                .filter(|&e| e <= buf.len())
                .ok_or_else(bad)?;
            Ok(Read::Data(DataPage {
                buf,
                rows: num_values as usize,
                encoding,
                levels: start..end,
                values: end,
            }))
        }
    }
}

/// The values of a page's present rows, each as PLAIN encodes it (a 4-byte length, then
/// the bytes), in row order.
enum Values<'p> {
    Plain {
        buf: &'p [u8],
        at: usize,
    },
    Indexed {
        dict: &'p Dictionary,
        indices: std::slice::Iter<'p, u32>,
    },
}

impl<'p> Values<'p> {
    fn next(&mut self) -> Result<&'p [u8], Failed> {
        match self {
            Values::Plain { buf, at } => {
                let bad = || corrupt("values are truncated");
                let len = le_u32(buf, *at).ok_or_else(bad)? as usize;
                let start = *at;
                *at = (start + 4)
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(bad)?;
                Ok(&buf[start..*at])
            }
            Values::Indexed { dict, indices } => {
                let index = indices
                    .next()
                    .ok_or_else(|| corrupt("dictionary indices are truncated"))?;
                dict.get(*index)
            }
        }
    }
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// A dictionary page's values, each with its 4-byte length, as a PLAIN page would hold it.
struct Dictionary {
    buf: Bytes,
    /// Where each value (length prefix included) starts and ends in `buf`.
    bounds: Vec<(usize, usize)>,
}

impl Dictionary {
    fn parse(buf: Bytes, count: usize) -> Result<Dictionary, Failed> {
        // A hostile count must not size an allocation: every value takes at least 4 bytes.
        let mut bounds = Vec::with_capacity(count.min(buf.len() / 4));
        let mut at = 0;
        for _ in 0..count {
            let len =
                le_u32(&buf, at).ok_or_else(|| corrupt("its dictionary is truncated"))? as usize;
            let end = (at + 4)
                .checked_add(len)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| corrupt("its dictionary is truncated"))?;
            bounds.push((at, end));
            at = end;
        }
        Ok(Dictionary { buf, bounds })
    }

    fn get(&self, index: u32) -> Result<&[u8], Failed> {
        let &(start, end) = self
            .bounds
            .get(index as usize)
            .ok_or_else(|| corrupt("a dictionary index is out of range"))?;
        Ok(&self.buf[start..end])
    }
}

/// Decodes `n` values of the RLE / bit-packed hybrid encoding, `width` bits each, appending
/// them to `out`. Values past `n` in the last run (bit-packed padding) are ignored.
fn decode_hybrid(data: &[u8], width: u32, n: usize, out: &mut Vec<u32>) -> Result<(), Failed> {
    let bad = || corrupt("levels or dictionary indices are truncated or out of range");
    if width > 32 {
        return Err(bad());
    }
    let goal = out.len() + n;
    let mut at = 0;
    while out.len() < goal {
        let mut header = 0u64;
        let mut shift = 0;
        loop {
            let byte = *data.get(at).ok_or_else(bad)?;
            at += 1;
            header |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 35 {
                return Err(bad());
            }
        }
        let want = goal - out.len();
        if header & 1 == 1 {
            // Bit-packed: (header >> 1) groups of 8 values, least significant bit first.
            let values = ((header >> 1) as usize).saturating_mul(8);
            let take = values.min(want);
            let bytes = (take * width as usize).div_ceil(8);
            let packed = data
                .get(at..at.checked_add(bytes).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            if width == 0 {
                out.extend(std::iter::repeat_n(0, take));
            } else {
                let mask = (1u64 << width) - 1;
                for i in 0..take {
                    let bit = i * width as usize;
                    let mut word = 0u64;
                    for (k, b) in packed[bit / 8..].iter().take(5).enumerate() {
                        word |= u64::from(*b) << (8 * k);
                    }
                    out.push(((word >> (bit % 8)) & mask) as u32);
                }
            }
            // The run's full length, unless the data ends early (its padding need not be there).
            at = at
                .saturating_add((values * width as usize).div_ceil(8))
                .min(data.len());
        } else {
            let count = (header >> 1) as usize;
            let bytes = (width as usize).div_ceil(8);
            let raw = data.get(at..at + bytes).ok_or_else(bad)?;
            at += bytes;
            let mut value = 0u32;
            for (k, b) in raw.iter().enumerate() {
                value |= u32::from(*b) << (8 * k);
            }
            if width < 32 && value >> width != 0 {
                return Err(bad());
            }
            out.extend(std::iter::repeat_n(value, count.min(want)));
        }
    }
    Ok(())
}

/// Encodes 0/1 levels in the RLE / bit-packed hybrid encoding at one bit each: runs of eight
/// or more equal levels as RLE runs, the rest bit-packed in groups of eight.
fn encode_levels(levels: &[u8], out: &mut Vec<u8>) {
    let run_at = |i: usize| {
        let v = levels[i];
        levels[i..].iter().take_while(|&&l| l == v).count()
    };
    let mut i = 0;
    while i < levels.len() {
        let run = run_at(i);
        if run >= 8 || i + run == levels.len() {
            put_varint(out, (run as u64) << 1);
            out.push(levels[i]);
            i += run;
            continue;
        }
        // Bit-pack whole groups of eight until a long run starts or the levels end; only the
        // last group of all may be short (its padding is never read).
        let start = i;
        while i < levels.len() {
            i += 8;
            if i >= levels.len() || run_at(i) >= 16 {
                break;
            }
        }
        let groups = (i - start).div_ceil(8);
        put_varint(out, ((groups as u64) << 1) | 1);
        for g in 0..groups {
            let mut byte = 0u8;
            for (k, &l) in levels[start + 8 * g..].iter().take(8).enumerate() {
                byte |= (l & 1) << k;
            }
            out.push(byte);
        }
        i = i.min(levels.len());
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The codecs output pages are written in here: those the `parquet` crate writes with the
/// same libraries and defaults.
#[derive(Debug, Clone, Copy)]
enum Codec {
    None,
    Zstd(i32),
    Snappy,
    Gzip(u32),
}

thread_local! {
    /// Each worker's zstd context (of the level last used), kept from page to page.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

impl Codec {
    fn new(c: Compression) -> Option<Codec> {
        match c {
            Compression::UNCOMPRESSED => Some(Codec::None),
            Compression::ZSTD(level) => Some(Codec::Zstd(level.compression_level())),
            Compression::SNAPPY => Some(Codec::Snappy),
            Compression::GZIP(level) => Some(Codec::Gzip(level.compression_level())),
            _ => None,
        }
    }

    /// Whether `stored` looks like a page body of `len` bytes in this codec, as far as its
    /// own header (or trailer) tells without decompressing it. This guards the reuse of
    /// stored bodies against a page reader that ever read them otherwise.
    fn holds(self, stored: &[u8], len: usize) -> bool {
        match self {
            Codec::None => stored.len() == len,
            // A frame written in one call names its size; one written as a stream does not.
            Codec::Zstd(_) => match zstd::zstd_safe::get_frame_content_size(stored) {
                Ok(size) => size.is_none_or(|size| size == len as u64),
                Err(_) => false,
            },
            Codec::Snappy => snap::raw::decompress_len(stored).is_ok_and(|n| n == len),
            // The gzip trailer ends with the input's size, modulo 2^32.
            Codec::Gzip(_) => {
                stored.starts_with(&[0x1f, 0x8b])
                    && stored.len() >= 18
                    && le_u32(stored, stored.len() - 4) == Some(len as u32)
            }
        }
    }

    /// Compresses `input` into a new buffer.
    fn compress(self, input: &[u8]) -> Result<Vec<u8>, Failed> {
        let err =
            |e: &dyn std::fmt::Display| Failed::Corrupt(format!("cannot compress a page: {e}"));
        match self {
            Codec::None => Ok(input.to_vec()),
            Codec::Zstd(level) => ZSTD.with(|cell| {
                let mut cached = cell.borrow_mut();
                if cached.as_ref().is_none_or(|(l, _)| *l != level) {
                    let c = zstd::bulk::Compressor::new(level).map_err(|e| err(&e))?;
                    *cached = Some((level, c));
                }
                match cached.as_mut() {
                    Some((_, c)) => c.compress(input).map_err(|e| err(&e)),
                    None => Err(err(&"no zstd context")),
                }
            }),
            Codec::Snappy => {
                let mut out = vec![0; snap::raw::max_compress_len(input.len())];
                let n = snap::raw::Encoder::new()
                    .compress(input, &mut out)
                    .map_err(|e| err(&e))?;
                out.truncate(n);
                Ok(out)
            }
            Codec::Gzip(level) => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(input.len() / 2),
                    flate2::Compression::new(level),
                );
                enc.write_all(input).map_err(|e| err(&e))?;
                enc.finish().map_err(|e| err(&e))
            }
        }
    }
}

/// A page ready but for compression.
struct Pending {
    body: Body,
    rows: usize,
    value_bytes: i64,
}

enum Body {
    /// A page filled here: its bytes from `begin` on, to be compressed.
    Filled { buf: Vec<u8>, begin: usize },
    /// An input page kept whole: its body as stored, and its size uncompressed.
    Stored { compressed: Bytes, len: usize },
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Filled { buf, begin } => buf.len() - begin,
            Body::Stored { len, .. } => *len,
        }
    }
}

/// The output column chunk being built, one page at a time.
struct Chunk<'a> {
    descr: ColumnDescPtr,
    props: &'a WriterProperties,
    optional: bool,
    /// Filled pages, not yet compressed.
    pending: Vec<Pending>,
    /// The page being filled: room for its definition levels, then its PLAIN values.
    page: Vec<u8>,
    /// The page's definition levels, one byte each.
    levels: Vec<u8>,
    page_rows: usize,
    page_nulls: usize,
    /// Bounds in `page` of the page's least and greatest values (length prefix excluded).
    page_min: Option<(usize, usize)>,
    page_max: Option<(usize, usize)>,
    page_value_bytes: i64,
    // The chunk so far.
    rows: usize,
    nulls: usize,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
    value_bytes: i64,
    histogram: Option<LevelHistogram>,
    column_index: ColumnIndexBuilder,
    /// The last page with values: its bounds as stored, for the boundary order.
    last: Option<(Vec<u8>, Vec<u8>)>,
    ascending: bool,
    descending: bool,
}

impl<'a> Chunk<'a> {
    fn new(descr: ColumnDescPtr, props: &'a WriterProperties) -> Chunk<'a> {
        let optional = descr.max_def_level() == 1;
        let histogram = LevelHistogram::try_new(descr.max_def_level());
        let column_index = ColumnIndexBuilder::new(descr.physical_type());
        let mut chunk = Chunk {
            descr,
            props,
            optional,
            pending: Vec::new(),
            page: Vec::new(),
            levels: Vec::new(),
            page_rows: 0,
            page_nulls: 0,
            page_min: None,
            page_max: None,
            page_value_bytes: 0,
            rows: 0,
            nulls: 0,
            min: None,
            max: None,
            value_bytes: 0,
            histogram,
            column_index,
            last: None,
            ascending: true,
            descending: true,
        };
        chunk.start_page();
        chunk
    }

    /// The most bytes the definition levels of a full page take in the encoding above: a
    /// varint header and a byte per group of eight, the worst case alternating runs.
    fn levels_room(&self) -> usize {
        match self.optional {
            true => 4 + 2 * self.props.data_page_row_count_limit().div_ceil(8) + 16,
            false => 0,
        }
    }

    fn start_page(&mut self) {
        self.page.clear();
        self.page.resize(self.levels_room(), 0);
        self.levels.clear();
        self.page_rows = 0;
        self.page_nulls = 0;
        self.page_min = None;
        self.page_max = None;
        self.page_value_bytes = 0;
    }

    fn push_null(&mut self) {
        self.levels.push(0);
        self.page_rows += 1;
        self.page_nulls += 1;
        if self.page_rows >= self.props.data_page_row_count_limit() {
            // A page of nulls only is as full as one of values.
            self.flush_page();
        }
    }

    /// Adds a value as PLAIN encodes it: a 4-byte length, then the bytes.
    fn push_encoded(&mut self, encoded: &[u8]) {
        let at = self.page.len() + 4;
        self.page.extend_from_slice(encoded);
        let value = (at, self.page.len());
        let bytes = &self.page[value.0..value.1];
        if self
            .page_min
            .is_none_or(|(s, e)| order(bytes, &self.page[s..e]).is_lt())
        {
            self.page_min = Some(value);
        }
        if self
            .page_max
            .is_none_or(|(s, e)| order(bytes, &self.page[s..e]).is_gt())
        {
            self.page_max = Some(value);
        }
        self.page_value_bytes += (value.1 - value.0) as i64;
        self.levels.push(1);
        self.page_rows += 1;
        if self.page.len() - self.levels_room() >= self.props.data_page_size_limit()
            || self.page_rows >= self.props.data_page_row_count_limit()
        {
            self.flush_page();
        }
    }

    /// Reads pages from `source` until at least `n` pages are filled or the pages end (then
    /// the last one is filled too); hands the filled pages over.
    fn fill<R: ChunkReader>(
        &mut self,
        source: &mut Source<'_, R>,
        n: usize,
    ) -> Result<Vec<Pending>, Failed> {
        while self.pending.len() < n && !source.done {
            if !source.next_page(self)? {
                self.flush_page();
            }
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Ends the page being filled and sets it aside for compression, with its statistics
    /// entered in the chunk's and the column index.
    fn flush_page(&mut self) {
        if self.page_rows == 0 {
            return;
        }
        // The definition levels go right before the values, at the end of the room kept.
        let room = self.levels_room();
        let (whole, begin) = match self.optional {
            true => {
                let mut encoded = Vec::with_capacity(16);
                encode_levels(&self.levels, &mut encoded);
                let len = (encoded.len() as u32).to_le_bytes();
                match room.checked_sub(4 + encoded.len()) {
                    Some(begin) => {
                        self.page[begin..begin + 4].copy_from_slice(&len);
                        self.page[begin + 4..room].copy_from_slice(&encoded);
                        (None, begin)
                    }
                    // Never for the encoder above; kept so that a larger encoding is still right.
                    None => {
                        let mut whole = Vec::with_capacity(4 + encoded.len() + self.page.len());
                        whole.extend_from_slice(&len);
                        whole.extend_from_slice(&encoded);
                        whole.extend_from_slice(&self.page[room..]);
                        (Some(whole), 0)
                    }
                }
            }
            false => (None, 0),
        };
        let next = Vec::with_capacity(self.page.capacity());
        let filled = std::mem::replace(&mut self.page, next);
        let bounds = self
            .page_min
            .zip(self.page_max)
            .map(|((ls, le), (gs, ge))| (&filled[ls..le], &filled[gs..ge]));
        let (rows, nulls, value_bytes) = (self.page_rows, self.page_nulls, self.page_value_bytes);
        self.record_page(rows, nulls, bounds, value_bytes);
        self.pending.push(Pending {
            body: Body::Filled {
                buf: whole.unwrap_or(filled),
                begin,
            },
            rows,
            value_bytes,
        });
        self.start_page();
    }

    /// Adds an input page that keeps all its rows, as it is stored, after flushing the page
    /// being filled. Its values are read for the statistics only.
    fn push_stored(
        &mut self,
        page: &DataPage,
        levels: &[u32],
        stored: Bytes,
    ) -> Result<(), Failed> {
        self.flush_page();
        let mut values = Values::Plain {
            buf: &page.buf,
            at: page.values,
        };
        // The levels of a column without nulls are none.
        let nulls = levels.iter().filter(|&&l| l == 0).count();
        let mut bounds: Option<(&[u8], &[u8])> = None;
        let mut value_bytes = 0;
        for _ in nulls..page.rows {
            let value = &values.next()?[4..];
            value_bytes += value.len() as i64;
            let (least, greatest) = bounds.get_or_insert((value, value));
            if order(value, least).is_lt() {
                *least = value;
            }
            if order(value, greatest).is_gt() {
                *greatest = value;
            }
        }
        self.record_page(page.rows, nulls, bounds, value_bytes);
        self.pending.push(Pending {
            body: Body::Stored {
                compressed: stored,
                len: page.buf.len(),
            },
            rows: page.rows,
            value_bytes,
        });
        Ok(())
    }

    /// Enters a page's statistics (its least and greatest values, if it has any) in the
    /// chunk's and in the column index.
    fn record_page(
        &mut self,
        rows: usize,
        nulls: usize,
        bounds: Option<(&[u8], &[u8])>,
        value_bytes: i64,
    ) {
        let mut histogram = LevelHistogram::try_new(self.descr.max_def_level());
        if let Some(h) = histogram.as_mut() {
            h.increment_by(0, nulls as i64);
            h.increment_by(1, (rows - nulls) as i64);
        }
        match bounds {
            Some((least, greatest)) => {
                let limit = self.props.column_index_truncate_length();
                let (min, max) = (
                    truncate_min(&self.descr, limit, least).0,
                    truncate_max(&self.descr, limit, greatest).0,
                );
                // The order is that of the bounds as stored, which readers binary-search.
                // (The `parquet` writer judges it on the values before they are cut, and a
                // cut can reverse two bounds: "z"×64 + "ÿ" < "z"×63 + "ÿ", but cut to 64
                // bytes the first is the greater.)
                if let Some((last_min, last_max)) = &self.last {
                    if *last_min > min || *last_max > max {
                        self.ascending = false;
                    }
                    if min > *last_min || max > *last_max {
                        self.descending = false;
                    }
                }
                self.column_index
                    .append(false, min.clone(), max.clone(), nulls as i64, None);
                if self.min.as_deref().is_none_or(|m| least < m) {
                    self.min = Some(least.to_vec());
                }
                if self.max.as_deref().is_none_or(|m| greatest > m) {
                    self.max = Some(greatest.to_vec());
                }
                self.last = Some((min, max));
            }
            None => self
                .column_index
                .append(true, Vec::new(), Vec::new(), nulls as i64, None),
        }
        self.column_index.append_histograms(&None, &histogram);
        if let (Some(total), Some(page)) = (self.histogram.as_mut(), histogram.as_ref()) {
            total.add(page);
        }
        self.rows += rows;
        self.nulls += nulls;
        self.value_bytes += value_bytes;
    }

    /// The chunk's metadata, and its bytes from `written`, where every filled page is.
    fn finish(mut self, written: Written) -> Result<Rewritten, Failed> {
        let descr = self.descr.clone();
        let statistics = {
            let (min, max) = (self.min.take(), self.max.take());
            let limit = self.props.statistics_truncate_length();
            let stats = match (min, max) {
                (Some(min), Some(max)) => {
                    let (min, min_truncated) = truncate_min(&descr, limit, &min);
                    let (max, max_truncated) = truncate_max(&descr, limit, &max);
                    ValueStatistics::new(
                        Some(ByteArray::from(min)),
                        Some(ByteArray::from(max)),
                        None,
                        Some(self.nulls as u64),
                        false,
                    )
                    .with_max_is_exact(!max_truncated)
                    .with_min_is_exact(!min_truncated)
                }
                _ => ValueStatistics::new(None, None, None, Some(self.nulls as u64), false),
            };
            Statistics::ByteArray(stats)
        };
        let order = match (self.ascending, self.descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        };
        self.column_index.set_boundary_order(order);
        let encodings = [Encoding::PLAIN, Encoding::RLE];
        let metadata = ColumnChunkMetaData::builder(descr.clone())
            .set_compression(self.props.compression(descr.path()))
            .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
            .set_page_encoding_stats(vec![PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: Encoding::PLAIN,
                count: written.pages,
            }])
            .set_total_compressed_size(written.compressed)
            .set_total_uncompressed_size(written.uncompressed)
            .set_num_values(self.rows as i64)
            .set_data_page_offset(0)
            .set_statistics(statistics)
            .set_unencoded_byte_array_data_bytes(Some(self.value_bytes))
            .set_definition_level_histogram(self.histogram.take())
            .build()?;
        let bytes_written = written.sink.bytes_written() as u64;
        let data = Bytes::from(written.sink.into_inner()?);
        Ok(Rewritten {
            data,
            close: ColumnCloseResult {
                bytes_written,
                rows_written: self.rows as u64,
                metadata,
                bloom_filter: None,
                column_index: Some(self.column_index.build()?),
                offset_index: Some(written.offset_index.build()),
            },
        })
    }
}

/// The output chunk's pages as written, from offset 0, and where each one lies.
struct Written {
    sink: TrackedWrite<Vec<u8>>,
    pages: i32,
    compressed: i64,
    uncompressed: i64,
    offset_index: OffsetIndexBuilder,
}

impl Written {
    /// `room`: about the size the chunk will be, reserved up front (growing a buffer of
    /// tens of MiB copies it a dozen times).
    fn new(room: usize) -> Written {
        Written {
            sink: TrackedWrite::new(Vec::with_capacity(room)),
            pages: 0,
            compressed: 0,
            uncompressed: 0,
            offset_index: OffsetIndexBuilder::new(),
        }
    }

    /// Writes `pages`, compressed as `compressed` (in the same order), after the others.
    fn write(
        &mut self,
        pages: Vec<Pending>,
        compressed: Vec<Result<Bytes, Failed>>,
    ) -> Result<(), Failed> {
        for (p, compressed) in pages.into_iter().zip(compressed) {
            let page = Page::DataPage {
                buf: compressed?,
                num_values: p.rows as u32,
                encoding: Encoding::PLAIN,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = SerializedPageWriter::new(&mut self.sink)
                .write_page(CompressedPage::new(page, p.body.len()))?;
            self.pages += 1;
            self.compressed += spec.compressed_size as i64;
            self.uncompressed += spec.uncompressed_size as i64;
            self.offset_index
                .append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            self.offset_index.append_row_count(p.rows as i64);
            self.offset_index
                .append_unencoded_byte_array_data_bytes(Some(p.value_bytes));
        }
        Ok(())
    }
}

/// `a` against `b` as unsigned bytes, as slices compare, but settled on their first eight
/// bytes where those differ: text values mostly do, and a call to `memcmp` per value and
/// bound was 2.6% of an erasure's time.
fn order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

/// Whether statistics of `descr` hold UTF-8 text (then truncated on character boundaries).
fn is_utf8(descr: &ColumnDescriptor) -> bool {
    descr.logical_type_ref() == Some(&LogicalType::String)
        || descr.converted_type() == ConvertedType::UTF8
}

/// A lower bound of `value` of at most `limit` bytes, and whether it is shorter than
/// `value` (the `parquet` writer's rule: UTF-8 text is cut on a character boundary).
fn truncate_min(descr: &ColumnDescriptor, limit: Option<usize>, value: &[u8]) -> (Vec<u8>, bool) {
    let cut = limit.filter(|&l| value.len() > l).and_then(|l| {
        match (is_utf8(descr), std::str::from_utf8(value)) {
            (true, Ok(text)) => (1..=l)
                .rfind(|&x| text.is_char_boundary(x))
                .map(|x| value[..x].to_vec()),
            _ => Some(value[..l].to_vec()),
        }
    });
    match cut {
        Some(v) => (v, true),
        None => (value.to_vec(), false),
    }
}

/// An upper bound of `value` of at most `limit` bytes, and whether it differs from `value`:
/// cut, then its last character (or byte) incremented, as the `parquet` writer does.
fn truncate_max(descr: &ColumnDescriptor, limit: Option<usize>, value: &[u8]) -> (Vec<u8>, bool) {
    let cut = limit.filter(|&l| value.len() > l).and_then(|l| {
        match (is_utf8(descr), std::str::from_utf8(value)) {
            (true, Ok(text)) => {
                let split = (l.saturating_sub(3)..=l).rfind(|&x| text.is_char_boundary(x))?;
                increment_utf8(text.get(..split)?)
            }
            _ => increment_bytes(value[..l].to_vec()),
        }
    });
    match cut {
        Some(v) => (v, true),
        None => (value.to_vec(), false),
    }
}

/// `text` with its last character that can be incremented without changing its encoded
/// width incremented, and what follows it dropped.
fn increment_utf8(text: &str) -> Option<Vec<u8>> {
    for (i, c) in text.char_indices().rev() {
        let width = c.len_utf8();
        if let Some(next) = char::from_u32(c as u32 + 1).filter(|n| n.len_utf8() == width) {
            let mut out = text.as_bytes()[..i + width].to_vec();
            next.encode_utf8(&mut out[i..]);
            return Some(out);
        }
    }
    None
}

/// `data` plus one, as a big-endian number of its length; `None` when all bytes are 0xff.
fn increment_bytes(mut data: Vec<u8>) -> Option<Vec<u8>> {
    for byte in data.iter_mut().rev() {
        let (next, overflow) = byte.overflowing_add(1);
        *byte = next;
        if !overflow {
            return Some(data);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_through_the_hybrid_encoding() {
        let mut rng = crate::testing::Rng(11);
        for case in 0..400 {
            let n = rng.below(300) + 1;
            // Long runs, short runs and noise, in every mix.
            let mut levels = Vec::with_capacity(n);
            while levels.len() < n {
                let v = rng.below(2) as u8;
                let len = match case % 3 {
                    0 => 1,
                    1 => rng.below(12) + 1,
                    _ => rng.below(60) + 1,
                };
                levels.extend(std::iter::repeat_n(v, len.min(n - levels.len())));
            }
            let mut encoded = Vec::new();
            encode_levels(&levels, &mut encoded);
            assert!(
                4 + encoded.len() <= 4 + 2 * n.div_ceil(8) + 16,
                "case {case}"
            );
            let mut decoded = Vec::new();
            decode_hybrid(&encoded, 1, n, &mut decoded).unwrap();
            let decoded: Vec<u8> = decoded.iter().map(|&v| v as u8).collect();
            assert_eq!(decoded, levels, "case {case}");
        }
    }

    #[test]
    fn hybrid_runs_decode_at_every_width_and_bad_ones_fail() {
        // Bit-packed, width 3: values 0..8 in one group, LSB first.
        let mut data = vec![0b11];
        let mut bits = 0u32;
        for v in 0..8u32 {
            bits |= v << (3 * v);
        }
        data.extend_from_slice(&bits.to_le_bytes()[..3]);
        // An RLE run of 300 (varint header) of value 5 at width 3.
        put_varint(&mut data, 300 << 1);
        data.push(5);
        let mut out = Vec::new();
        decode_hybrid(&data, 3, 308, &mut out).unwrap();
        assert_eq!(&out[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(out[8..].iter().all(|&v| v == 5) && out.len() == 308);

        // Width 20 and width 0.
        let mut wide = vec![0b11];
        let mut packed = vec![0u8; 20];
        for (i, v) in (0..8u64).map(|i| i * 100_003 % (1 << 20)).enumerate() {
            for b in 0..20 {
                if v >> b & 1 == 1 {
                    let bit = i * 20 + b;
                    packed[bit / 8] |= 1 << (bit % 8);
                }
            }
        }
        wide.extend_from_slice(&packed);
        let mut out = Vec::new();
        decode_hybrid(&wide, 20, 8, &mut out).unwrap();
        let want: Vec<u32> = (0..8u32).map(|i| i * 100_003 % (1 << 20)).collect();
        assert_eq!(out, want);
        let mut out = Vec::new();
        decode_hybrid(&[8 << 1], 0, 8, &mut out).unwrap();
        assert_eq!(out, vec![0; 8]);

        // Truncated runs, a value wider than the width, an endless varint.
        for (data, width) in [
            (vec![0b11, 0xff], 3),
            (vec![4 << 1], 3),
            (vec![4 << 1, 9], 3),
            (vec![0xff; 8], 1),
            (vec![], 1),
        ] {
            assert!(decode_hybrid(&data, width, 8, &mut Vec::new()).is_err());
        }
        assert!(decode_hybrid(&[2], 33, 1, &mut Vec::new()).is_err());
    }

    /// The guard on stored bodies: a body each codec wrote, of the size the page header
    /// gives, passes; the wrong size, or a body with a page header still in front, does not.
    #[test]
    fn a_stored_body_passes_only_as_its_codec_wrote_it() {
        let page: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let header = [0x15, 0x00, 0x15, 0xc0, 0x9c, 0x01, 0x15, 0x90, 0x4e];
        // A frame flushed before its input ends, whose header cannot name its size.
        let mut stream = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        stream.write_all(&page[..100]).unwrap();
        stream.flush().unwrap();
        stream.write_all(&page[100..]).unwrap();
        let zstd_stream = stream.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&zstd_stream).unwrap(),
            None,
            "a streamed frame names no size"
        );
        let codecs = [Codec::None, Codec::Zstd(1), Codec::Snappy, Codec::Gzip(6)];
        let bodies = codecs
            .iter()
            .map(|&c| (c, c.compress(&page).unwrap(), true))
            .chain([(Codec::Zstd(1), zstd_stream, false)]);
        for (codec, body, sized) in bodies {
            assert!(codec.holds(&body, page.len()), "{codec:?}");
            // (A frame that names no size passes at any.)
            assert_eq!(codec.holds(&body, page.len() + 1), !sized, "{codec:?}");
            let behind_header = [&header[..], &body].concat();
            if !matches!(codec, Codec::None) {
                assert!(!codec.holds(&behind_header, page.len()), "{codec:?}");
            }
        }
    }

    #[test]
    fn values_order_as_byte_slices_do() {
        let mut rng = crate::testing::Rng(5);
        let pick = |rng: &mut crate::testing::Rng| -> Vec<u8> {
            // Short and long values sharing prefixes, and bytes above 0x7f.
            let len = rng.pick(&[0, 1, 7, 8, 9, 16, 40]);
            (0..len)
                .map(|_| rng.pick(&[b'a', b'b', 0x7f, 0x80, 0xff]))
                .collect()
        };
        for _ in 0..20_000 {
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            assert_eq!(order(&a, &b), a.cmp(&b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn statistics_are_cut_as_the_parquet_writer_cuts_them() {
        use parquet::schema::types::{ColumnPath, Type as SchemaType};
        let descr = |utf8: bool| {
            let mut t = SchemaType::primitive_type_builder("c", Type::BYTE_ARRAY);
            if utf8 {
                t = t.with_logical_type(Some(LogicalType::String));
            }
            ColumnDescriptor::new(Arc::new(t.build().unwrap()), 0, 0, ColumnPath::from("c"))
        };
        let (text, bytes) = (descr(true), descr(false));
        assert_eq!(
            truncate_min(&text, Some(4), b"abc"),
            (b"abc".to_vec(), false)
        );
        assert_eq!(
            truncate_min(&text, Some(4), b"abcdef"),
            (b"abcd".to_vec(), true)
        );
        // "é" is two bytes: a cut at 4 would split it.
        let e = "abcé".as_bytes();
        assert_eq!(truncate_min(&text, Some(4), &[e, b"x"].concat()).0, b"abc");
        assert_eq!(
            truncate_min(&bytes, Some(4), &[e, b"x"].concat()).0,
            &e[..4]
        );
        assert_eq!(
            truncate_max(&text, Some(4), b"abcdef"),
            (b"abce".to_vec(), true)
        );
        assert_eq!(
            truncate_max(&bytes, Some(2), b"a\xff\xffz"),
            (b"b\x00".to_vec(), true)
        );
        assert!(!truncate_max(&bytes, Some(2), b"\xff\xffz").1);
        assert_eq!(
            truncate_max(&text, None, b"abcdef"),
            (b"abcdef".to_vec(), false)
        );
    }
}
