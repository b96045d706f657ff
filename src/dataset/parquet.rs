//! Parquet in and out, one row group at a time, schema and metadata intact.
//!
//! A `ParquetInput` reads the footer once, then decodes only the subject column of a row
//! group to decide its rows. A `ParquetOutput` writes a file with the input's Parquet schema,
//! key-value metadata (including the embedded Arrow schema) and per-column codecs. A row group
//! whose rows are all kept is spliced in as its encoded column chunks, not decoded; one that
//! loses rows is decoded, filtered and re-encoded, so its statistics, page index and bloom
//! filters describe only the rows that remain.

use std::fs::File;
use std::io::Write;
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
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
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

use super::scan::SubjectPath;

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
        Ok(ParquetInput {
            path: path.to_path_buf(),
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
            self.meta.clone(),
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

    /// Decodes the rows of row group `rg` that `keep` marks and encodes them as the column
    /// chunks of one output row group, 8K rows at a time whatever the mask.
    ///
    /// When the dropped rows are few and in runs (an erasure), the reader skips them as it
    /// decodes, so they are never copied; it then reads without the page index, whose row
    /// counts would otherwise decide which pages to skip unchecked. When they are scattered
    /// (a filter), every row is decoded and the batch filtered.
    pub fn filtered<W: Write + Send>(
        &self,
        rg: usize,
        keep: &[bool],
        out: &ParquetOutput<W>,
    ) -> Result<Vec<ArrowColumnChunk>, String> {
        let err = |e: &dyn std::fmt::Display| format!("row group {rg}: {e}");
        if keep.len() as u64 != self.rows(rg) {
            return Err(format!(
                "row group {rg}: {} rows decided where its metadata says {}",
                keep.len(),
                self.rows(rg)
            ));
        }
        let mask = BooleanArray::from(keep.to_vec());
        let selection = RowSelection::from_filters(std::slice::from_ref(&mask));
        let wanted = selection.row_count();
        let skip = keep.len() / selection.iter().count().max(1) >= MIN_SKIPPED_RUN;
        let builder = match skip {
            true => ParquetRecordBatchReaderBuilder::new_with_metadata(
                self.open_file()?,
                self.for_rewrite(self.unindexed())?,
            )
            .with_row_selection(selection)
            .with_row_selection_policy(RowSelectionPolicy::Selectors),
            false => ParquetRecordBatchReaderBuilder::new_with_metadata(
                self.open_file()?,
                self.for_rewrite(self.metadata().clone())?,
            ),
        };
        let reader = builder
            .with_row_groups(vec![rg])
            .with_batch_size(8 * 1024)
            .build()
            .map_err(|e| err(&e))?;
        let mut writers = out.factory.create_column_writers(rg).map_err(|e| err(&e))?;
        let schema = self.meta.schema();
        let (mut read, mut written) = (0, 0);
        for batch in reader {
            let batch = batch.map_err(|e| err(&e))?;
            let batch = match skip {
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
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                for leaf in compute_leaves(field, column).map_err(|e| err(&e))? {
                    let writer = next
                        .next()
                        .ok_or_else(|| err(&"schema has fewer leaves than data"))?;
                    writer.write(&leaf).map_err(|e| err(&e))?;
                }
            }
        }
        if written != wanted || (!skip && read != keep.len()) {
            return Err(err(&format!(
                "read {written} rows where {wanted} were kept"
            )));
        }
        writers
            .into_iter()
            .map(|w| w.close().map_err(|e| err(&e)))
            .collect()
    }

    /// The footer without its page index, for reads that skip rows.
    fn unindexed(&self) -> Arc<ParquetMetaData> {
        let meta = ParquetMetaDataBuilder::new_from_metadata(self.metadata().as_ref().clone())
            .set_page_index(None)
            .build();
        Arc::new(meta)
    }

    /// How a rewrite decodes `meta`'s row groups: string and binary columns as views into
    /// the decompressed pages, so that neither decoding nor filtering copies their values
    /// (the encoder reads views as it reads offsets; the output's schema is the input's).
    /// A file whose schema the reader will not read as views is read as it is.
    fn for_rewrite(&self, meta: Arc<ParquetMetaData>) -> Result<ArrowReaderMetadata, String> {
        let views = ArrowReaderOptions::new().with_schema(as_views(self.meta.schema()));
        ArrowReaderMetadata::try_new(meta.clone(), views)
            .or_else(|_| ArrowReaderMetadata::try_new(meta, ArrowReaderOptions::new()))
            .map_err(|e| format!("not a readable Parquet file: {e}"))
    }
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

/// A Parquet file being written with an input's schema, metadata and codecs.
pub struct ParquetOutput<W: Write + Send = crate::dataset::write::AtomicFile> {
    writer: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
}

impl<W: Write + Send> ParquetOutput<W> {
    pub fn create(input: &ParquetInput, sink: W) -> Result<ParquetOutput<W>, String> {
        let meta = input.metadata();
        let schema = meta.file_metadata().schema_descr();
        let mut props = WriterProperties::builder()
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
        let writer =
            SerializedFileWriter::new(sink, schema.root_schema_ptr(), Arc::new(props.build()))
                .map_err(|e| format!("cannot start output: {e}"))?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, input.meta.schema().clone());
        Ok(ParquetOutput { writer, factory })
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
    pub fn append(&mut self, rg: usize, chunks: Vec<ArrowColumnChunk>) -> Result<(), String> {
        let mut out = self
            .writer
            .next_row_group()
            .map_err(|e| format!("row group {rg}: {e}"))?;
        for chunk in chunks {
            chunk
                .append_to_row_group(&mut out)
                .map_err(|e| format!("row group {rg}: {e}"))?;
        }
        out.close().map_err(|e| format!("row group {rg}: {e}"))?;
        Ok(())
    }

    /// Writes the footer and hands back the sink.
    pub fn finish(self) -> Result<W, String> {
        self.writer
            .into_inner()
            .map_err(|e| format!("cannot finish output: {e}"))
    }
}
