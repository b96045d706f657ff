//! Parquet in and out, one row group at a time, schema and metadata intact.
//!
//! A `ParquetInput` reads the footer once, then decodes only the subject column of a row
//! group to decide its rows. A `ParquetOutput` writes a file with the input's Parquet schema,
//! key-value metadata (including the embedded Arrow schema) and per-column codecs. A row group
//! whose rows are all kept is spliced in as its encoded column chunks, not decoded; in one
//! that loses rows, flat text and binary columns written without a dictionary are rewritten
//! page by page (`pages`) and the other columns decoded, filtered and re-encoded through
//! Arrow, so that statistics, page index and bloom filters describe only the rows that remain.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::buffer::NullBuffer;
use arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelectionPolicy,
};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Encoding;
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{
    ColumnChunkMetaData, PageIndexPolicy, ParquetMetaData, ParquetMetaDataBuilder,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::pages;
use super::scan::SubjectPath;
use crate::exec;

/// What one row's subject cell holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Id(&'a str),
    /// Null or the empty string.
    Missing,
    /// A type that cannot hold a subject id (float, binary, bool, list…).
    Invalid,
}

/// An open Parquet file and where its subject lives.
pub struct ParquetInput {
    /// Opened anew for every reader: clones of one `File` share a file offset, and the
    /// Parquet reader seeks, so readers on several threads must not share a descriptor.
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// How every read goes: by the footer without its page index, so that rows are
    /// decided, rewritten and verified from the pages their own headers chain, never from
    /// where an index says pages are (a file whose index and pages disagree would otherwise
    /// be judged on one and written from the other). The index is only carried into copied
    /// row groups. `reading` decodes as the file's schema says; `rewriting` decodes strings
    /// and binaries as views (see `rewriting`).
    reading: ArrowReaderMetadata,
    rewriting: ArrowReaderMetadata,
    /// Leaf column index of the subject.
    subject_leaf: usize,
    subject: Vec<String>,
}

impl ParquetInput {
    /// Opens a file and reads its footer. A file that is not Parquet, is truncated, has a
    /// corrupt footer or has no subject column is an error here, before anything is written.
    pub fn open(path: &Path, subject: &SubjectPath) -> Result<ParquetInput, String> {
        let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&file, options)
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        let segments: Vec<String> = subject.segments().to_vec();
        let mut matching = meta
            .metadata()
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| c.path().parts() == segments.as_slice())
            .map(|(i, _)| i);
        let Some(subject_leaf) = matching.next() else {
            return Err(format!(
                "no column {} (the job's subject_field); the file was not processed",
                segments.join(".")
            ));
        };
        // Writers allow repeated names (two `user_id` columns, a struct with two `id`
        // fields). Which one holds the subject is then unknown, and judging by one would
        // keep rows the other names.
        let others = matching.count();
        if others > 0 {
            return Err(format!(
                "{} columns are named {}; which one holds the subject is ambiguous, so the file \
                 was not processed",
                others + 1,
                segments.join(".")
            ));
        }
        let unindexed = Arc::new(
            ParquetMetaDataBuilder::new_from_metadata(meta.metadata().as_ref().clone())
                .set_page_index(None)
                .build(),
        );
        let unreadable =
            |e: parquet::errors::ParquetError| format!("not a readable Parquet file: {e}");
        let reading = ArrowReaderMetadata::try_new(unindexed.clone(), ArrowReaderOptions::new())
            .map_err(unreadable)?;
        let rewriting = rewriting(meta.schema(), unindexed).map_err(unreadable)?;
        Ok(ParquetInput {
            path: path.to_path_buf(),
            reading,
            rewriting,
            meta,
            subject_leaf,
            subject: segments,
        })
    }

    pub fn metadata(&self) -> &Arc<ParquetMetaData> {
        self.meta.metadata()
    }

    pub fn row_groups(&self) -> usize {
        self.metadata().num_row_groups()
    }

    pub fn rows(&self, rg: usize) -> u64 {
        self.metadata().row_group(rg).num_rows().max(0) as u64
    }

    fn open_file(&self) -> Result<File, String> {
        File::open(&self.path).map_err(|e| format!("cannot read: {e}"))
    }

    fn builder(&self) -> Result<ParquetRecordBatchReaderBuilder<File>, String> {
        Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.open_file()?,
            self.reading.clone(),
        ))
    }

    /// Decodes the subject column of row group `rg` and calls `each` with every row's cell,
    /// in row order.
    pub fn subjects(&self, rg: usize, mut each: impl FnMut(Cell<'_>)) -> Result<(), String> {
        let leaf = self.subject_leaf;
        let builder = self.builder()?;
        let mask = ProjectionMask::leaves(builder.parquet_schema(), [leaf]);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(vec![rg])
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| format!("row group {rg}: {e}"))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("row group {rg}: {e}"))?;
            let top = batch.column(0).clone();
            let (column, nulls) = descend(top.clone(), top.logical_nulls(), &self.subject[1..])?;
            let text: Option<StringArray> = match column.data_type() {
                t if is_id_type(t) => {
                    let lenient = CastOptions {
                        safe: true,
                        ..Default::default()
                    };
                    let utf8 = cast_with_options(&column, &DataType::Utf8, &lenient)
                        .map_err(|e| format!("row group {rg}: {e}"))?;
                    Some(utf8.as_string::<i32>().clone())
                }
                _ => None,
            };
            for i in 0..column.len() {
                let null = nulls.as_ref().is_some_and(|n| n.is_null(i));
                let cell = match (&text, null) {
                    (_, true) => Cell::Missing,
                    (None, false) => Cell::Invalid,
                    (Some(t), false) if t.value(i).is_empty() => Cell::Missing,
                    (Some(t), false) => Cell::Id(t.value(i)),
                };
                each(cell);
            }
        }
        Ok(())
    }

    /// Encodes the rows of row group `rg` that `keep` marks as the column chunks of one
    /// output row group. Flat byte-array columns written without a dictionary (long text,
    /// mostly) are rewritten page by page (`pages`); the other columns are decoded through
    /// Arrow and encoded again. A chunk the page rewrite turns out not to take sends the
    /// whole row group through Arrow.
    pub fn filtered<W: Write + Send>(
        &self,
        rg: usize,
        keep: &[bool],
        out: &ParquetOutput<W>,
    ) -> Result<Vec<Encoded>, String> {
        let err = |e: &dyn std::fmt::Display| format!("row group {rg}: {e}");
        if keep.len() as u64 != self.rows(rg) {
            return Err(format!(
                "row group {rg}: {} rows decided where its metadata says {}",
                keep.len(),
                self.rows(rg)
            ));
        }
        let group = self.metadata().row_group(rg);
        let by_pages: Vec<bool> = group
            .columns()
            .iter()
            .map(|chunk| pages::takes(chunk.column_descr(), chunk, &out.props))
            .collect();
        let writers = |rg| out.factory.create_column_writers(rg).map_err(|e| err(&e));
        if by_pages.iter().any(|&p| p) {
            // The two parts side by side: a file of one row group keeps both cores busy.
            let arrow_writers = writers(rg)?;
            let props = out.props.as_ref();
            let (rewritten, arrow) = exec::join(
                || self.rewrite_pages(rg, keep, &by_pages, props),
                || self.through_arrow(rg, keep, &by_pages, arrow_writers),
            );
            match rewritten {
                Ok(rewritten) => {
                    let mut arrow = arrow?.into_iter();
                    let mut rewritten = rewritten.into_iter();
                    return by_pages
                        .iter()
                        .map(|&p| match p {
                            true => rewritten.next().map(Encoded::Pages),
                            false => arrow.next().map(Encoded::Arrow),
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| err(&"fewer column chunks than columns"));
                }
                Err(pages::Failed::Unsupported(_)) => {}
                Err(pages::Failed::Corrupt(e)) => return Err(err(&e)),
            }
        }
        let none = vec![false; by_pages.len()];
        Ok(self
            .through_arrow(rg, keep, &none, writers(rg)?)?
            .into_iter()
            .map(Encoded::Arrow)
            .collect())
    }

    /// Rewrites the chunks `by_pages` marks, in column order (in parallel, when a file has
    /// several such columns).
    fn rewrite_pages(
        &self,
        rg: usize,
        keep: &[bool],
        by_pages: &[bool],
        props: &WriterProperties,
    ) -> Result<Vec<pages::Rewritten>, pages::Failed> {
        let chunks: Vec<&ColumnChunkMetaData> = self
            .metadata()
            .row_group(rg)
            .columns()
            .iter()
            .zip(by_pages)
            .filter(|(_, &p)| p)
            .map(|(chunk, _)| chunk)
            .collect();
        exec::par_map(&chunks, |chunk| {
            // A file of its own for each: the page reader moves its file offset.
            let file = self.open_file().map_err(pages::Failed::Corrupt)?;
            pages::rewrite(Arc::new(file), chunk, keep, props)
        })
        .into_iter()
        .collect()
    }

    /// Decodes the rows `keep` marks of the columns `skip` does not mark and encodes them
    /// with their `writers` (one per column, in column order), 8K rows at a time whatever the
    /// mask; returns their chunks in column order.
    ///
    /// When the dropped rows are few and in runs (an erasure), the reader skips them as it
    /// decodes, so they are never copied. When they are scattered (a filter), every row is
    /// decoded and the batch filtered.
    fn through_arrow(
        &self,
        rg: usize,
        keep: &[bool],
        skip: &[bool],
        writers: Vec<ArrowColumnWriter>,
    ) -> Result<Vec<ArrowColumnChunk>, String> {
        let err = |e: &dyn std::fmt::Display| format!("row group {rg}: {e}");
        let descr = self.metadata().file_metadata().schema_descr();
        // Columns rewritten by pages are top-level fields of their own; every other
        // top-level field is read whole.
        let roots: Vec<usize> = (0..self.meta.schema().fields().len())
            .filter(|&r| !(0..skip.len()).any(|c| skip[c] && descr.get_column_root_idx(c) == r))
            .collect();
        let mut writers: Vec<_> = writers
            .into_iter()
            .zip(skip)
            .filter(|(_, &s)| !s)
            .map(|(w, _)| w)
            .collect();
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let mask = BooleanArray::from(keep.to_vec());
        let selection = RowSelection::from_filters(std::slice::from_ref(&mask));
        let wanted = selection.row_count();
        let skip_rows = keep.len() / selection.iter().count().max(1) >= MIN_SKIPPED_RUN;
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.open_file()?,
            self.rewriting.clone(),
        );
        let builder = match skip_rows {
            true => builder
                .with_row_selection(selection)
                .with_row_selection_policy(RowSelectionPolicy::Selectors),
            false => builder,
        };
        let projection = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let reader = builder
            .with_projection(projection)
            .with_row_groups(vec![rg])
            .with_batch_size(8 * 1024)
            .build()
            .map_err(|e| err(&e))?;
        let schema = self.meta.schema();
        let fields: Vec<_> = roots.iter().map(|&r| schema.field(r)).collect();
        let (mut read, mut written) = (0, 0);
        for batch in reader {
            let batch = batch.map_err(|e| err(&e))?;
            let batch = match skip_rows {
                true => batch,
                false => {
                    let n = batch.num_rows();
                    let slice = mask.slice(read, n.min(keep.len().saturating_sub(read)));
                    if slice.len() != n {
                        return Err(err(&"more rows than its metadata says"));
                    }
                    read += n;
                    filter_record_batch(&batch, &slice).map_err(|e| err(&e))?
                }
            };
            written += batch.num_rows();
            let mut next = writers.iter_mut();
            for (field, column) in fields.iter().zip(batch.columns()) {
                for leaf in compute_leaves(field, column).map_err(|e| err(&e))? {
                    let writer = next
                        .next()
                        .ok_or_else(|| err(&"schema has fewer leaves than data"))?;
                    writer.write(&leaf).map_err(|e| err(&e))?;
                }
            }
        }
        if written != wanted || (!skip_rows && read != keep.len()) {
            return Err(err(&format!(
                "read {written} rows where {wanted} were kept"
            )));
        }
        writers
            .into_iter()
            .map(|w| w.close().map_err(|e| err(&e)))
            .collect()
    }
}

/// How a rewrite decodes the row groups of `meta`: string and binary columns as views into
/// the decompressed pages, so that neither decoding nor filtering copies their values (the
/// encoder reads views as it reads offsets; the output's schema is the input's). A file
/// whose schema the reader will not read as views is read as it is.
fn rewriting(
    schema: &SchemaRef,
    meta: Arc<ParquetMetaData>,
) -> parquet::errors::Result<ArrowReaderMetadata> {
    let views = ArrowReaderOptions::new().with_schema(as_views(schema));
    ArrowReaderMetadata::try_new(meta.clone(), views)
        .or_else(|_| ArrowReaderMetadata::try_new(meta, ArrowReaderOptions::new()))
}

/// `schema` with every string and binary field, top-level or inside structs, as its view
/// type.
fn as_views(schema: &SchemaRef) -> SchemaRef {
    fn view(field: &Field) -> Field {
        let viewed = match field.data_type() {
            DataType::Utf8 => DataType::Utf8View,
            DataType::Binary => DataType::BinaryView,
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| view(f)).collect::<Fields>())
            }
            other => other.clone(),
        };
        field.clone().with_data_type(viewed)
    }
    let fields: Fields = schema.fields().iter().map(|f| view(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The shortest average run of rows per selector for which skipping dropped rows while
/// decoding beats decoding every row and filtering (the parquet crate's own threshold).
const MIN_SKIPPED_RUN: usize = 32;

/// Integer and string columns hold ids; a cast to UTF-8 gives an integer's decimal text.
fn is_id_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => true,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => true,
        // Older writers store strings as plain bytes; bytes that are not UTF-8 read as null.
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        DataType::Dictionary(_, value) => is_id_type(value),
        _ => false,
    }
}

/// Walks from a projected top-level column down a struct path, merging the validity of
/// every level so a null struct makes its fields' rows null.
fn descend(
    mut column: ArrayRef,
    mut nulls: Option<NullBuffer>,
    rest: &[String],
) -> Result<(ArrayRef, Option<NullBuffer>), String> {
    for name in rest {
        let Some(s) = column.as_struct_opt() else {
            return Err(format!("{name:?} is below a column that is not a struct"));
        };
        let child = s
            .column_by_name(name)
            .ok_or_else(|| format!("no struct field {name:?}"))?
            .clone();
        nulls = NullBuffer::union(nulls.as_ref(), child.logical_nulls().as_ref());
        column = child;
    }
    Ok((column, nulls))
}

/// Whether column `c`'s rewrite should be dictionary-encoded: when the input's first row
/// group encoded it so, unless in every row group some data pages fell back to another
/// encoding (the writer gave up on the dictionary there, its values being too many:
/// building one again would only be undone).
fn keeps_dictionary(meta: &ParquetMetaData, c: usize) -> bool {
    let fell_back = |chunk: &ColumnChunkMetaData| {
        chunk.page_encoding_stats_mask().is_some_and(|data_pages| {
            data_pages
                .encodings()
                .any(|e| !matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY))
        })
    };
    meta.row_group(0)
        .column(c)
        .dictionary_page_offset()
        .is_some()
        && !meta.row_groups().iter().all(|rg| fell_back(rg.column(c)))
}

/// One column chunk of a rewritten row group.
pub enum Encoded {
    /// Decoded and encoded again through Arrow.
    Arrow(ArrowColumnChunk),
    /// Rewritten page by page.
    Pages(pages::Rewritten),
}

/// A Parquet file being written with an input's schema, metadata and codecs.
pub struct ParquetOutput<W: Write + Send = crate::dataset::write::AtomicFile> {
    /// Over a buffer of its own: the writer copies spliced column chunks (unchanged row
    /// groups, rewritten pages) 8 KiB at a time, each of which was one `write` to the file.
    writer: SerializedFileWriter<BufWriter<W>>,
    factory: ArrowRowGroupWriterFactory,
    props: Arc<WriterProperties>,
}

/// The output buffer's size.
const OUTPUT_BUFFER: usize = 1 << 20;

impl<W: Write + Send> ParquetOutput<W> {
    pub fn create(input: &ParquetInput, sink: W) -> Result<ParquetOutput<W>, String> {
        Self::create_with(input, sink, WriterProperties::builder())
    }

    /// `create`, starting from `props` (tests use smaller pages).
    fn create_with(
        input: &ParquetInput,
        sink: W,
        props: parquet::file::properties::WriterPropertiesBuilder,
    ) -> Result<ParquetOutput<W>, String> {
        let meta = input.metadata();
        let schema = meta.file_metadata().schema_descr();
        let mut props = props
            .set_key_value_metadata(meta.file_metadata().key_value_metadata().cloned())
            .set_statistics_enabled(EnabledStatistics::Page);
        if meta.num_row_groups() > 0 {
            for (i, chunk) in meta.row_group(0).columns().iter().enumerate() {
                let path = ColumnPath::new(schema.column(i).path().parts().to_vec());
                let dictionary = keeps_dictionary(meta, i);
                props = props
                    .set_column_compression(path.clone(), chunk.compression())
                    .set_column_dictionary_enabled(path.clone(), dictionary);
                if chunk.bloom_filter_offset().is_some() {
                    props = props.set_column_bloom_filter_enabled(path, true);
                }
            }
        }
        let props = Arc::new(props.build());
        let sink = BufWriter::with_capacity(OUTPUT_BUFFER, sink);
        let writer = SerializedFileWriter::new(sink, schema.root_schema_ptr(), props.clone())
            .map_err(|e| format!("cannot start output: {e}"))?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, input.meta.schema().clone());
        Ok(ParquetOutput {
            writer,
            factory,
            props,
        })
    }

    /// Splices row group `rg` of `input` in unchanged: its encoded column chunks are copied,
    /// with their statistics, page index and bloom filters.
    pub fn copy_row_group(&mut self, input: &ParquetInput, rg: usize) -> Result<(), String> {
        let meta = input.metadata();
        let group = meta.row_group(rg);
        let page_index = meta.page_index_for_row_group(rg);
        let file = input.open_file()?;
        let mut out = self
            .writer
            .next_row_group()
            .map_err(|e| format!("row group {rg}: {e}"))?;
        for (c, chunk) in group.columns().iter().enumerate() {
            let close = ColumnCloseResult {
                bytes_written: chunk.compressed_size().max(0) as u64,
                rows_written: group.num_rows().max(0) as u64,
                metadata: chunk.clone(),
                bloom_filter: Sbbf::read_from_column_chunk(chunk, &file).ok().flatten(),
                column_index: page_index.column_index(c).cloned(),
                offset_index: page_index.offset_index(c).cloned(),
            };
            out.append_column(&file, close)
                .map_err(|e| format!("row group {rg}: {e}"))?;
        }
        out.close().map_err(|e| format!("row group {rg}: {e}"))?;
        Ok(())
    }

    /// Appends one row group from chunks made by `ParquetInput::filtered`.
    pub fn append(&mut self, rg: usize, chunks: Vec<Encoded>) -> Result<(), String> {
        let mut out = self
            .writer
            .next_row_group()
            .map_err(|e| format!("row group {rg}: {e}"))?;
        for chunk in chunks {
            match chunk {
                Encoded::Arrow(chunk) => chunk.append_to_row_group(&mut out),
                Encoded::Pages(r) => out.append_column(&r.data, r.close),
            }
            .map_err(|e| format!("row group {rg}: {e}"))?;
        }
        out.close().map_err(|e| format!("row group {rg}: {e}"))?;
        Ok(())
    }

    /// Writes the footer and hands back the sink.
    pub fn finish(self) -> Result<W, String> {
        let err = |e: &dyn std::fmt::Display| format!("cannot finish output: {e}");
        self.writer
            .into_inner()
            .map_err(|e| err(&e))?
            .into_inner()
            .map_err(|e| err(e.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BinaryArray, LargeStringArray, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{BoundaryOrder, Compression, GzipLevel, ZstdLevel};
    use parquet::file::metadata::{ParquetMetaDataReader, ParquetMetaDataWriter};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::properties::WriterVersion;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use crate::testing::Rng;

    /// Text of every kind the page rewrite meets: none, empty, short, longer than the
    /// 64 bytes statistics keep, and with multi-byte characters around that cut.
    fn text(rng: &mut Rng) -> Option<String> {
        let long = |rng: &mut Rng, unit: &str| unit.repeat(rng.below(40) + 20);
        match rng.below(8) {
            0 => None,
            1 => Some(String::new()),
            2 => Some(format!("t{}", rng.below(1000))),
            3 => Some(long(rng, "é")),
            4 => Some(format!("{}{}", "a".repeat(62), long(rng, "\u{10FFFF}"))),
            5 => Some(format!("{}ÿ", "z".repeat(63 + rng.below(3)))),
            _ => Some(format!("{} {}", rng.below(100), long(rng, "word "))),
        }
    }

    /// A file of `rows` rows: a small `user_id`, nullable text, required text, large text
    /// and binary that is no UTF-8, written as `props` says.
    fn file(rng: &mut Rng, rows: usize, props: WriterProperties) -> Vec<u8> {
        let mut texts: Vec<Option<String>> = (0..rows).map(|_| text(rng)).collect();
        // Sorted columns, whose page index says so.
        match rng.below(4) {
            0 => texts.sort(),
            1 => texts.sort_by(|a, b| b.cmp(a)),
            _ => {}
        }
        let required: Vec<String> = texts
            .iter()
            .map(|t| t.clone().unwrap_or_default())
            .collect();
        let binary: Vec<Option<Vec<u8>>> = texts
            .iter()
            .map(|t| t.as_ref().map(|t| [t.as_bytes(), &[0xff, 0xfe]].concat()))
            .collect();
        let batch = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| ["alice", "bob", "carol"][i % 3]),
                )) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from(texts.clone())) as ArrayRef,
            ),
            (
                "required",
                Arc::new(StringArray::from(required)) as ArrayRef,
            ),
            ("large", Arc::new(LargeStringArray::from(texts)) as ArrayRef),
            (
                "binary",
                Arc::new(BinaryArray::from_iter(binary.iter().map(|b| b.as_deref()))) as ArrayRef,
            ),
        ])
        .unwrap();
        // `required` has no nulls; the schema says so, so it is written without levels.
        let schema = Arc::new(Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(f.name() != "required"))
                .collect::<Fields>(),
        ));
        written(&batch.with_schema(schema).unwrap(), props)
    }

    /// `batch` as a Parquet file, written as `props` says.
    fn written(batch: &RecordBatch, props: WriterProperties) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        out
    }

    /// Rewrites every row group of `input` keeping `keep[rg]`, page by page where the page
    /// rewrite takes a column (`pages`) or all through Arrow; returns the file and which
    /// column chunks (output row group, column) went by pages.
    fn rewrite(
        input: &ParquetInput,
        keep: &[Vec<bool>],
        pages: bool,
        (page_bytes, page_rows): (usize, usize),
    ) -> (Vec<u8>, Vec<(usize, usize)>) {
        let props = WriterProperties::builder()
            .set_data_page_size_limit(page_bytes)
            .set_data_page_row_count_limit(page_rows)
            .set_write_batch_size(page_rows.min(1024));
        let mut out = ParquetOutput::create_with(input, Vec::new(), props).unwrap();
        let mut by_pages = Vec::new();
        for (rg, keep) in keep.iter().enumerate() {
            if !keep.contains(&true) {
                continue;
            }
            let chunks = match pages {
                true => input.filtered(rg, keep, &out).unwrap(),
                false => {
                    let none = vec![false; input.metadata().row_group(rg).num_columns()];
                    let writers = out.factory.create_column_writers(rg).unwrap();
                    let chunks = input.through_arrow(rg, keep, &none, writers).unwrap();
                    chunks.into_iter().map(Encoded::Arrow).collect()
                }
            };
            let written = out.writer.flushed_row_groups().len();
            for (c, chunk) in chunks.iter().enumerate() {
                if matches!(chunk, Encoded::Pages(_)) {
                    by_pages.push((written, c));
                }
            }
            out.append(rg, chunks).unwrap();
        }
        (out.finish().unwrap(), by_pages)
    }

    fn batches(file: &[u8]) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Checks every page of every byte-array column of `file` against its page index: row
    /// counts add up, null counts and null pages are right, and each page's bounds hold its
    /// values (exactly, where no value is longer than the 64 bytes the index keeps). In the
    /// chunks `by_pages` lists, the boundary order holds for the bounds as stored too (the
    /// `parquet` writer judges it before cutting them, so its chunks can fail that).
    fn check_page_index(file: &[u8], by_pages: &[(usize, usize)]) {
        let bytes = bytes::Bytes::copy_from_slice(file);
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        let mut start = 0;
        for rg in 0..meta.num_row_groups() {
            let rows = meta.row_group(rg).num_rows() as usize;
            let page_index = meta.page_index_for_row_group(rg);
            let batch = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap()
                .with_row_groups(vec![rg])
                .with_batch_size(rows)
                .build()
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            for c in 1..batch.num_columns() {
                let column =
                    cast_with_options(batch.column(c), &DataType::Binary, &CastOptions::default())
                        .unwrap();
                let values = column.as_binary::<i32>();
                let whole = page_index.column_index(c);
                let Some(ColumnIndexMetaData::BYTE_ARRAY(index)) = whole else {
                    panic!("column {c}: no byte array index");
                };
                let offsets = page_index.offset_index(c).unwrap();
                let locations = offsets.page_locations();
                assert_eq!(locations[0].first_row_index, 0);
                let mut bounds: Vec<(&[u8], &[u8])> = Vec::new();
                for (p, location) in locations.iter().enumerate() {
                    let from = location.first_row_index as usize;
                    let to = locations
                        .get(p + 1)
                        .map_or(rows, |l| l.first_row_index as usize);
                    let page: Vec<Option<&[u8]>> = (from..to)
                        .map(|i| values.is_valid(i).then(|| values.value(i)))
                        .collect();
                    let nulls = page.iter().filter(|v| v.is_none()).count();
                    assert_eq!(
                        index.null_count(p),
                        Some(nulls as i64),
                        "rg {rg} column {c} page {p}"
                    );
                    let present: Vec<&[u8]> = page.iter().flatten().copied().collect();
                    assert_eq!(index.is_null_page(p), present.is_empty());
                    let bytes: usize = present.iter().map(|v| v.len()).sum();
                    let at = format!("rg {rg} column {c} page {p}");
                    assert_eq!(
                        offsets.unencoded_byte_array_data_bytes().unwrap()[p],
                        bytes as i64,
                        "{at}"
                    );
                    if let Some(h) = index.definition_level_histogram(p) {
                        assert_eq!(h, [nulls as i64, present.len() as i64], "{at}");
                    }
                    if !present.is_empty() {
                        bounds.push((index.min_value(p).unwrap(), index.max_value(p).unwrap()));
                    }
                    if let (Some(least), Some(greatest)) =
                        (present.iter().min(), present.iter().max())
                    {
                        let (min, max) = (index.min_value(p).unwrap(), index.max_value(p).unwrap());
                        assert!(
                            min <= *least && max >= *greatest,
                            "rg {rg} column {c} page {p}"
                        );
                        if least.len() <= 64 {
                            assert_eq!(min, *least);
                        }
                        if greatest.len() <= 64 {
                            assert_eq!(max, *greatest);
                        }
                    }
                }
                // An order the index claims must hold for the bounds it holds.
                let pairs = bounds.windows(2);
                match whole
                    .and_then(|w| w.get_boundary_order())
                    .filter(|_| by_pages.contains(&(rg, c)))
                {
                    Some(BoundaryOrder::ASCENDING) => {
                        pairs.for_each(|w| assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1))
                    }
                    Some(BoundaryOrder::DESCENDING) => {
                        pairs.for_each(|w| assert!(w[0].0 >= w[1].0 && w[0].1 >= w[1].1))
                    }
                    _ => {}
                }
            }
            start += rows;
        }
        assert_eq!(start as i64, meta.file_metadata().num_rows());
    }

    #[test]
    fn a_page_rewrite_reads_back_as_the_arrow_rewrite_with_the_same_statistics() {
        let mut rng = Rng(0x9a6e5);
        let mut taken = 0;
        for case in 0..48 {
            let compression = rng.pick(&[
                Compression::ZSTD(ZstdLevel::default()),
                Compression::SNAPPY,
                Compression::GZIP(GzipLevel::default()),
                Compression::UNCOMPRESSED,
                Compression::LZ4_RAW,
            ]);
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_writer_version(
                    rng.pick(&[WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0]),
                )
                // Dictionaries that hold, that overflow into PLAIN pages, or none at all.
                .set_dictionary_enabled(rng.chance(70))
                .set_dictionary_page_size_limit(rng.pick(&[256, 1 << 20]))
                .set_data_page_size_limit(rng.pick(&[300, 4096, 1 << 20]))
                .set_data_page_row_count_limit(rng.pick(&[7, 100, 20_000]))
                .set_write_batch_size(rng.pick(&[5, 1024]))
                .set_max_row_group_row_count(Some(rng.pick(&[50, 400, 10_000])))
                .build();
            let rows = rng.pick(&[1, 60, 900]);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.parquet");
            std::fs::write(&path, file(&mut rng, rows, props)).unwrap();
            let input = ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap();
            let density = rng.pick(&[1, 50, 95, 99]);
            let keep: Vec<Vec<bool>> = (0..input.row_groups())
                .map(|rg| (0..input.rows(rg)).map(|_| rng.chance(density)).collect())
                .collect();

            // Output pages of every size, down to a value or a row each.
            let pages = (
                rng.pick(&[1, 200, 5000, 1 << 20]),
                rng.pick(&[1, 3, 64, 20_000]),
            );
            let (by_pages, taken_here) = rewrite(&input, &keep, true, pages);
            let (by_arrow, none) = rewrite(&input, &keep, false, pages);
            assert!(none.is_empty());
            taken += taken_here.len();
            let what = format!(
                "case {case}: {compression:?}, {rows} rows, {density}% kept, pages {pages:?}"
            );
            assert_eq!(batches(&by_pages), batches(&by_arrow), "{what}");
            let (a, b) = (
                ParquetMetaDataReader::new()
                    .parse_and_finish(&bytes::Bytes::from(by_pages.clone()))
                    .unwrap(),
                ParquetMetaDataReader::new()
                    .parse_and_finish(&bytes::Bytes::from(by_arrow))
                    .unwrap(),
            );
            assert_eq!(a.num_row_groups(), b.num_row_groups(), "{what}");
            for (ga, gb) in a.row_groups().iter().zip(b.row_groups()) {
                assert_eq!(ga.num_rows(), gb.num_rows(), "{what}");
                for (ca, cb) in ga.columns().iter().zip(gb.columns()) {
                    let at = format!("{what}, column {}", ca.column_path());
                    assert_eq!(ca.statistics(), cb.statistics(), "{at}");
                    assert_eq!(ca.num_values(), cb.num_values(), "{at}");
                    assert_eq!(ca.compression(), cb.compression(), "{at}");
                    assert_eq!(
                        ca.unencoded_byte_array_data_bytes(),
                        cb.unencoded_byte_array_data_bytes(),
                        "{at}"
                    );
                    assert_eq!(
                        ca.definition_level_histogram(),
                        cb.definition_level_histogram(),
                        "{at}"
                    );
                    assert_eq!(
                        ca.dictionary_page_offset().is_some(),
                        cb.dictionary_page_offset().is_some(),
                        "{at}"
                    );
                }
            }
            check_page_index(&by_pages, &taken_here);
        }
        assert!(
            taken > 100,
            "the page rewrite took only {taken} column chunks"
        );
    }

    /// An erasure drops a few rows from chunks of many pages. Every page that keeps all its
    /// rows is written as it was stored, not compressed again; only the pages that lost a
    /// row are. The input is compressed harder than the output, so a page compressed again
    /// does not come out as the bytes it was stored as.
    #[test]
    fn pages_that_keep_every_row_are_written_as_they_were_stored() {
        // Each codec, with the magic number its bodies open with.
        for (compression, magic) in [
            (
                Compression::ZSTD(ZstdLevel::try_new(9).unwrap()),
                &[0x28, 0xb5, 0x2f, 0xfd][..],
            ),
            (
                Compression::GZIP(GzipLevel::try_new(9).unwrap()),
                &[0x1f, 0x8b, 0x08][..],
            ),
        ] {
            let mut rng = Rng(0x5704ed);
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_dictionary_enabled(false)
                .set_data_page_row_count_limit(20)
                .set_write_batch_size(20)
                .set_max_row_group_row_count(Some(400))
                .build();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.parquet");
            // Text unlike from row to row, so that no two pages hold the same bytes; one
            // column with nulls and one without.
            let words = |rng: &mut Rng, row: usize| {
                let n = rng.below(30) + 5;
                let words: Vec<String> = (0..n).map(|_| format!("w{}", rng.below(5000))).collect();
                format!("{row} {}", words.join(" "))
            };
            let text: Vec<Option<String>> = (0..400)
                .map(|row| (row % 7 != 3).then(|| words(&mut rng, row)))
                .collect();
            let required: Vec<String> = (0..400).map(|row| words(&mut rng, row)).collect();
            let schema = Arc::new(Schema::new(vec![
                Field::new("user_id", DataType::Utf8, false),
                Field::new("text", DataType::Utf8, true),
                Field::new("required", DataType::Utf8, false),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from_iter_values(
                        (0..400).map(|r| format!("u{r}")),
                    )),
                    Arc::new(StringArray::from(text)),
                    Arc::new(StringArray::from(required)),
                ],
            )
            .unwrap();
            let bytes = written(&batch, props);
            std::fs::write(&path, &bytes).unwrap();
            let input = ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap();
            // Rows 45 and 301 go: the pages of rows 40-59 and 300-319, in every column.
            let keep = vec![(0..400).map(|r| r != 45 && r != 301).collect::<Vec<bool>>()];
            let (out, by_pages) = rewrite(&input, &keep, true, (1 << 20, 20_000));
            let (by_arrow, _) = rewrite(&input, &keep, false, (1 << 20, 20_000));
            assert_eq!(batches(&out), batches(&by_arrow), "{compression:?}");
            assert_eq!(by_pages, [(0, 0), (0, 1), (0, 2)], "{compression:?}");
            check_page_index(&out, &by_pages);

            let meta = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Required)
                .parse_and_finish(&bytes::Bytes::from(bytes.clone()))
                .unwrap();
            let page_index = meta.page_index_for_row_group(0);
            for c in 0..3 {
                let pages = page_index.offset_index(c).unwrap().page_locations();
                assert_eq!(pages.len(), 20, "{compression:?} column {c}");
                for (p, page) in pages.iter().enumerate() {
                    // The page's body as stored: what follows its header.
                    let start = page.offset as usize;
                    let stored = &bytes[start..start + page.compressed_page_size as usize];
                    let body = &stored[memchr::memmem::find(stored, magic).unwrap()..];
                    let lost_a_row = p == 2 || p == 15;
                    assert_eq!(
                        memchr::memmem::find(&out, body).is_some(),
                        !lost_a_row,
                        "{compression:?} column {c} page {p}"
                    );
                }
            }
        }
    }

    /// A V2 data page is never written again as stored: its levels carry no length and
    /// are not compressed, so its body is no V1 body (uncompressed, it even passes the
    /// codec's guard). pyarrow writes such pages (`data_page_version="2.0"`, PLAIN).
    #[test]
    fn a_v2_page_that_keeps_every_row_is_rewritten_not_reused() {
        for compression in [Compression::UNCOMPRESSED, Compression::SNAPPY] {
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_writer_version(WriterVersion::PARQUET_2_0)
                .set_dictionary_enabled(false)
                .set_encoding(parquet::basic::Encoding::PLAIN)
                .set_data_page_row_count_limit(20)
                .set_write_batch_size(20)
                .build();
            let mut rng = Rng(0x7e2);
            let bytes = file(&mut rng, 400, props);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.parquet");
            std::fs::write(&path, &bytes).unwrap();
            let input = ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap();
            let keep = vec![(0..400).map(|r| r != 45 && r != 301).collect::<Vec<bool>>()];
            let (out, by_pages) = rewrite(&input, &keep, true, (1 << 20, 20_000));
            assert!(!by_pages.is_empty(), "{compression:?}");
            let (by_arrow, _) = rewrite(&input, &keep, false, (1 << 20, 20_000));
            assert_eq!(batches(&out), batches(&by_arrow), "{compression:?}");
            check_page_index(&out, &by_pages);
        }
    }

    /// Row groups of one file in different codecs: the output takes the first's, and a
    /// stored page of another row group is not reused, even when its body happens to pass
    /// the output codec's guard (a zstd frame opens with 0x28, which snappy reads as "40
    /// bytes"; these pages are 40 bytes: 4 values of 6 bytes, each with its length).
    #[test]
    fn a_stored_page_in_another_codec_than_the_output_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, compression: Compression| {
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_dictionary_enabled(false)
                .set_data_page_row_count_limit(4)
                .set_write_batch_size(4)
                .build();
            let schema = Arc::new(Schema::new(vec![
                Field::new("user_id", DataType::Utf8, false),
                Field::new("required", DataType::Utf8, false),
            ]));
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from_iter_values(
                        (0..40).map(|r| format!("u{r:05}")),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (0..40).map(|r| format!("v{r:05}")),
                    )),
                ],
            )
            .unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, written(&batch, props)).unwrap();
            ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap()
        };
        let (snappy, zstd) = (
            write("snappy.parquet", Compression::SNAPPY),
            write("zstd.parquet", Compression::ZSTD(ZstdLevel::default())),
        );
        // One file: row group 0 in snappy, row group 1 in zstd.
        let mut out = ParquetOutput::create(&snappy, Vec::new()).unwrap();
        out.copy_row_group(&snappy, 0).unwrap();
        out.copy_row_group(&zstd, 0).unwrap();
        let path = dir.path().join("mixed.parquet");
        std::fs::write(&path, out.finish().unwrap()).unwrap();
        let input = ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap();
        assert_eq!(input.row_groups(), 2);
        let keep = vec![vec![true; 40], (0..40).map(|r| r != 13).collect()];
        let (out, by_pages) = rewrite(&input, &keep, true, (1 << 20, 20_000));
        assert!(by_pages.contains(&(1, 1)), "{by_pages:?}");
        let (by_arrow, _) = rewrite(&input, &keep, false, (1 << 20, 20_000));
        assert_eq!(batches(&out), batches(&by_arrow));
        check_page_index(&out, &by_pages);
    }

    /// `file` with its footer rewritten to say that column `column`'s chunks hold PLAIN
    /// values only, whatever their pages say.
    fn claiming_plain(file: &[u8], column: usize) -> Vec<u8> {
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::copy_from_slice(file))
            .unwrap();
        let tail = file.len() - 8;
        let footer = u32::from_le_bytes(file[tail..tail + 4].try_into().unwrap()) as usize;
        let groups = meta
            .row_groups()
            .iter()
            .map(|rg| {
                let columns = rg.columns().iter().enumerate().map(|(c, chunk)| match c {
                    c if c == column => chunk
                        .clone()
                        .into_builder()
                        .set_encodings(vec![Encoding::PLAIN, Encoding::RLE])
                        .build()
                        .unwrap(),
                    _ => chunk.clone(),
                });
                rg.clone()
                    .into_builder()
                    .set_column_metadata(columns.collect())
                    .build()
                    .unwrap()
            })
            .collect();
        let meta = meta.into_builder().set_row_groups(groups).build();
        let mut out = file[..tail - footer].to_vec();
        ParquetMetaDataWriter::new(&mut out, &meta)
            .finish()
            .unwrap();
        out
    }

    /// A footer can list encodings its pages do not use. The page rewrite, chosen from the
    /// footer, meets a page it does not read and hands the row group to Arrow whole.
    #[test]
    fn a_chunk_whose_pages_belie_its_footer_is_rewritten_through_arrow() {
        let mut rng = Rng(0xde17a);
        let text = ColumnPath::from("text");
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_column_dictionary_enabled(text.clone(), false)
            .set_column_encoding(text, Encoding::DELTA_LENGTH_BYTE_ARRAY)
            .set_data_page_size_limit(4096)
            .set_max_row_group_row_count(Some(300))
            .build();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.parquet");
        std::fs::write(&path, claiming_plain(&file(&mut rng, 700, props), 1)).unwrap();
        let input = ParquetInput::open(&path, &SubjectPath::parse("user_id").unwrap()).unwrap();
        let meta = input.metadata();
        let chunk = meta.row_group(0).column(1);
        assert_eq!(chunk.column_path().string(), "text");
        let pages_say: Vec<Encoding> = SerializedFileReader::new(File::open(&path).unwrap())
            .unwrap()
            .get_row_group(0)
            .unwrap()
            .get_column_page_reader(1)
            .unwrap()
            .map(|p| p.unwrap().encoding())
            .collect();
        assert!(
            pages_say.contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY),
            "{pages_say:?}"
        );
        let out = ParquetOutput::create(&input, Vec::new()).unwrap();
        assert!(
            pages::takes(chunk.column_descr(), chunk, &out.props),
            "the footer alone sends the chunk to the page rewrite"
        );

        let keep: Vec<Vec<bool>> = (0..input.row_groups())
            .map(|rg| (0..input.rows(rg)).map(|_| rng.chance(80)).collect())
            .collect();
        let (tried, by_pages) = rewrite(&input, &keep, true, (4096, 20_000));
        let (by_arrow, _) = rewrite(&input, &keep, false, (4096, 20_000));
        assert!(
            by_pages.iter().all(|&(_, c)| c != 1),
            "the text column went by pages: {by_pages:?}"
        );
        assert_eq!(batches(&tried), batches(&by_arrow));
        let kept: usize = keep.iter().flatten().filter(|&&k| k).count();
        assert_eq!(
            batches(&tried).iter().map(|b| b.num_rows()).sum::<usize>(),
            kept
        );
    }
}
