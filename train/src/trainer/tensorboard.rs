//! TensorBoard's event files, written without TensorFlow: the scalars of every `train_log.jsonl`
//! record (losses, learning rate, gradient norm, throughput, loss scale, validation metrics,
//! `--eval-bin` results) at the step they are logged, in `tensorboard/` of the run folder.
//!
//! An event file is a TFRecord file (each record: its length as a little-endian u64, the masked
//! CRC32C of those 8 bytes, the data, the masked CRC32C of the data) of protobuf `Event`s
//! (`tensorflow/core/util/event.proto`), the first one `file_version: "brain.Event:2"`. The few
//! messages needed are declared here with prost's derive, their field numbers those of
//! TensorFlow's `.proto` files, so no protoc runs at build time.
//!
//! A resumed run redoes the steps after its checkpoint: records of those steps are dropped from
//! the earlier files (as `train_log.jsonl` drops its lines) and the run goes on in a new file,
//! named to sort after them, since TensorBoard reads a folder's files in name order and merges
//! them. No step is then logged twice.

use crate::run::paths::{event_file_seconds, RunPaths};
use anyhow::{Context, Result};
use prost::Message;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the first record of every event file says (TensorBoard's readers check it).
pub const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.Event`, with the two of its `what` cases facekit writes.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    /// Seconds since the epoch.
    #[prost(double, tag = "1")]
    wall_time: f64,
    /// The training step.
    #[prost(int64, tag = "2")]
    step: i64,
    /// The file's header or a summary.
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    /// The format's version, [`FILE_VERSION`].
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Values at a step.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` holding a `simple_value`.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    /// The scalar's name (`train/loss`).
    #[prost(string, tag = "1")]
    tag: String,
    /// Part of the `value` oneof in TensorFlow's file, so present even when zero: a learning
    /// rate of 0 at the start of a warm-up must still be written.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// The scalars of one `train_log.jsonl` record, tag and value, in TensorBoard's naming: a step's
/// record gives `train/loss`, `train/fr_loss`, `train/gender_loss`, `train/age_loss`, `train/lr`,
/// `train/grad_norm` (with clipping), `train/loss_scale` and `train/skipped_steps` (fp16),
/// `train/images_per_second`, `train/data_wait_ms`; a validation `validation/METRIC`; an
/// `--eval-bin` result `eval_bin/SET/accuracy` and `eval_bin/SET/std`. Fields that are absent,
/// `null` or not numbers give nothing.
pub fn scalars(record: &serde_json::Value) -> Vec<(String, f64)> {
    const STEP_FIELDS: [&str; 10] = [
        "loss",
        "fr_loss",
        "gender_loss",
        "age_loss",
        "lr",
        "grad_norm",
        "loss_scale",
        "skipped_steps",
        "images_per_second",
        "data_wait_ms",
    ];
    let mut out = Vec::new();
    for field in STEP_FIELDS {
        if let Some(v) = record[field].as_f64() {
            out.push((format!("train/{field}"), v));
        }
    }
    if let Some(metrics) = record["validation"].as_object() {
        out.extend(metrics.iter().filter_map(|(k, v)| Some((format!("validation/{k}"), v.as_f64()?))));
    }
    if let Some(set) = record["eval_bin"]["set"].as_str() {
        for field in ["accuracy", "std"] {
            if let Some(v) = record["eval_bin"][field].as_f64() {
                out.push((format!("eval_bin/{set}/{field}"), v));
            }
        }
    }
    out
}

/// Appends events to this process's event file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Drops the records of steps after `keep_through` from the run's earlier event files (a
    /// resume redoes those steps), then starts a new file, named to sort after them, with the
    /// version record.
    pub fn open(run: &RunPaths, keep_through: u64) -> Result<Self> {
        let dir = run.tensorboard();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let earlier = run.event_files()?;
        for path in &earlier {
            truncate_after(path, keep_through)?;
        }
        // TensorBoard reads a folder's files in name order: this one's seconds must sort after
        // any earlier file's, even when it starts within the same second.
        let now = wall_time();
        let after = earlier.iter().filter_map(|p| event_file_seconds(p)).max().map_or(0, |s| s + 1);
        let path = run.event_file((now as u64).max(after), &host_name(), std::process::id(), earlier.len());
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = EventWriter { path, file };
        writer.put(&Event { wall_time: now, step: 0, what: Some(What::FileVersion(FILE_VERSION.into())) })?;
        Ok(writer)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the scalars `values` at `step` as one event (nothing when there are none) and
    /// flushes it to the file, so that a crash loses nothing written before it.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let value =
            values.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32) }).collect();
        self.put(&Event {
            wall_time: wall_time(),
            step: i64::try_from(step).context("step beyond i64")?,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// One record, written with a single call so that a crash can tear at most the last one.
    fn put(&mut self, event: &Event) -> Result<()> {
        let record = frame(&event.encode_to_vec());
        self.file.write_all(&record).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// TFRecord's framing of `data`.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's masked CRC32C (a CRC of data that holds CRCs would be weak, hence the rotation).
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// The whole records of `bytes`, each as its byte range and decoded event, up to the first torn,
/// corrupt or undecodable one.
fn records(bytes: &[u8]) -> Vec<(std::ops::Range<usize>, Event)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 12) {
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes).to_le_bytes() != len_crc {
            break;
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let Some(end) = usize::try_from(len).ok().and_then(|l| (at + 12).checked_add(l)) else { break };
        let (Some(data), Some(crc)) = (bytes.get(at + 12..end), bytes.get(end..end + 4)) else { break };
        if masked_crc(data).to_le_bytes() != crc {
            break;
        }
        let Ok(event) = Event::decode(data) else { break };
        out.push((at..end + 4, event));
        at = end + 4;
    }
    out
}

/// Rewrites the event file `path` (atomically) without the records of steps after
/// `keep_through` and without a torn or corrupt tail; leaves it alone when there is none.
fn truncate_after(path: &Path, keep_through: u64) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut kept = Vec::with_capacity(bytes.len());
    for (range, event) in records(&bytes) {
        let summary_after = matches!(event.what, Some(What::Summary(_))) && event.step > keep_through as i64;
        if !summary_after {
            kept.extend_from_slice(&bytes[range]);
        }
    }
    if kept.len() != bytes.len() {
        facekit_io::durable::write(path, &kept)?;
    }
    Ok(())
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, as TensorFlow puts it in event file names (`localhost` when unknown).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    // A name with a dot would add fields to the file name; TensorBoard cares only for "tfevents".
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<Event> {
        records(&std::fs::read(path).unwrap()).into_iter().map(|(_, e)| e).collect()
    }

    fn steps(events: &[Event]) -> Vec<i64> {
        events.iter().filter(|e| matches!(e.what, Some(What::Summary(_)))).map(|e| e.step).collect()
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c_test: CRC32C("123456789") is 0xe3069283; masked as TFRecord masks.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
    }

    #[test]
    fn a_resume_drops_later_steps_and_continues_in_a_file_that_sorts_after() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunPaths::new(dir.path());
        let mut w = EventWriter::open(&run, 0).unwrap();
        for s in 1..=5 {
            w.scalars(s, &[("train/loss".into(), s as f64), ("train/lr".into(), 0.0)]).unwrap();
        }
        let first = w.path().to_path_buf();
        // A torn last record, as a crash in the middle of a write leaves.
        let mut f = OpenOptions::new().append(true).open(&first).unwrap();
        f.write_all(&frame(&[1, 2, 3])[..7]).unwrap();
        drop((w, f));
        let events = read(&first);
        assert!(matches!(&events[0].what, Some(What::FileVersion(v)) if v == FILE_VERSION));
        let Some(What::Summary(s)) = &events[1].what else { panic!("{:?}", events[1]) };
        assert_eq!(s.value[1].simple_value, Some(0.0), "a zero is written, not left out");

        let mut w = EventWriter::open(&run, 3).unwrap();
        w.scalars(4, &[("train/loss".into(), 40.0)]).unwrap();
        assert_eq!(steps(&read(&first)), vec![1, 2, 3]);
        assert!(w.path().file_name().unwrap() > first.file_name().unwrap(), "{:?} after {first:?}", w.path());
        assert_eq!(steps(&read(w.path())), vec![4]);
        assert_eq!(run.event_files().unwrap(), vec![first, w.path().to_path_buf()]);
    }

    #[test]
    fn scalars_name_every_number_of_a_record() {
        let step = serde_json::json!({"step": 3, "epoch": 0, "lr": 0.1, "loss": 2.5, "fr_loss": 2.5,
            "gender_loss": null, "age_loss": null, "images_per_second": 10.0, "data_wait_ms": 1.0});
        let tags: Vec<String> = scalars(&step).into_iter().map(|(t, _)| t).collect();
        assert_eq!(tags, ["train/loss", "train/fr_loss", "train/lr", "train/images_per_second", "train/data_wait_ms"]);
        let bin = serde_json::json!({"step": 3, "eval_bin": {"set": "lfw", "accuracy": 0.5, "std": 0.1}});
        assert_eq!(scalars(&bin), [("eval_bin/lfw/accuracy".into(), 0.5), ("eval_bin/lfw/std".into(), 0.1)]);
    }
}
