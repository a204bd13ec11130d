//! MXNet RecordIO, the format insightface distributes face training sets in, in pure Rust.
//!
//! A dataset folder holds `train.rec`, `train.idx` and `property`:
//! - [`frame`]: a `.rec` is a sequence of records, each `u32 MAGIC`, `u32 lrec`
//!   (`cflag << 29 | length`), the payload, zero padding to 4 bytes; a payload holding the magic
//!   at an aligned position is split into parts there (cflag 1, 2..., 3). [`RecReader`] reads a
//!   record at an offset; [`RecReader::scan`] reads them all in order and resynchronises after
//!   damage;
//! - [`index`]: the `.idx` is text, `key<TAB>offset` per record; a key listed again replaces its
//!   earlier line, as in MXNet's dict ([`Index`]);
//! - [`header`]: a payload is an [`IrHeader`] (`u32 flag, f32 label, u64 id, u64 id2`, 24 bytes
//!   little-endian), `flag` float32 labels when `flag > 0`, then the image bytes;
//! - [`insightface`]: which keys are images and which are identity ranges ([`Layout`]);
//! - [`property`] holds `num_classes,height,width`;
//! - [`writer`]: writing a `.rec` and `.idx` that MXNet reads back, atomically.
//!
//! All little-endian, no checksums: a flipped byte inside a payload is only caught by whoever
//! decodes the image. Every length read from a file is checked against the file's size and the
//! caller's limit before anything is allocated. No image codec here.

pub mod error;
pub mod frame;
pub mod header;
pub mod index;
pub mod insightface;
pub mod property;
pub mod scan;
pub mod writer;

pub use error::{Error, FrameError, PayloadError, Result};
pub use frame::{Frame, RecReader, MAGIC, MAX_LENGTH};
pub use header::{pack, unpack, IrHeader, Unpacked};
pub use index::{read_idx, IdxEntry, Index};
pub use insightface::Layout;
pub use property::Property;
pub use scan::Scan;
pub use writer::RecWriter;
