//! MXNet RecordIO in and out, for the datasets insightface users already hold (MS1MV2/MS1MV3,
//! Glint360K, WebFace42M, ...): [`import_rec`] turns a `.rec` into a facekit dataset,
//! [`export_rec`] writes a dataset back in insightface's layout. The format itself is the
//! `facekit-recordio` crate; here are the pipelines:
//! - [`input`]: the files of an insightface folder and the plan of records to read;
//! - [`record`]: one record checked and turned into a facekit record, or a reject;
//! - [`names`]: the `--names` file, identity names for the label map;
//! - [`import`] and [`progress`]: the import as a source of the pipeline
//!   ([`crate::pipeline`]), whose workers hold a bounded number of bytes, not of records
//!   ([`inflight`]);
//! - [`export`]: the dataset written as `train.rec`, `train.idx` and `property`.

pub mod export;
pub mod import;
pub mod inflight;
pub mod input;
pub mod names;
pub mod progress;
pub mod record;

pub use export::{export_rec, ExportOptions, ExportReport};
pub use import::{import_rec, ImportCounters, ImportEnd, ImportOptions, ImportReport};
