//! The `property` file of an insightface dataset folder: one line `num_classes,height,width`
//! (`112` twice for every published set).
//!
//! Which size is which, from insightface's own readers (its MXNet-era trainers, e.g. the
//! `train_softmax.py` of the pre-2019 tree): they read `image_size = [int(vec[1]), int(vec[2])]`,
//! then set `args.image_h = image_size[0]`, `args.image_w = image_size[1]` and a data shape of
//! `(3, image_size[0], image_size[1])`, channels-height-width: the second field is the height,
//! the third the width. Every published set is square, so files in the wild never disagree.
//! `recognition/common/rec_builder.py` writes `"%d,%d,%d\n" % (max_label + 1, image_size[0],
//! image_size[1])`.

use crate::error::Error;
use facekit_io::Budget;
use std::path::Path;

/// The most bytes a `property` file may have (it is one short line).
pub(crate) const PROPERTY_BUDGET: Budget = Budget { what: "property file", bytes: 64 << 10 };

/// What a `property` file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// Number of identities (the largest class label plus one).
    pub classes: u64,
    /// Image height in pixels (the second field).
    pub height: u32,
    /// Image width in pixels (the third field).
    pub width: u32,
}

impl Property {
    /// Reads a `property` file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = facekit_io::bounded::read_string(path, PROPERTY_BUDGET)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `property` file; `path` names it in errors.
    ///
    /// Exactly one line (a final newline is optional), three comma-separated integers with
    /// optional spaces around them, as insightface's `int()` accepts them.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let lines: Vec<&str> = text.lines().collect();
        let [line] = lines[..] else {
            return Err(Error::line(
                path,
                lines.len().clamp(1, 2),
                format!("expected one line, found {}", lines.len()),
            ));
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [classes, height, width] = fields[..] else {
            return Err(Error::line(path, 1, format!("expected `num_classes,height,width`, found {line:?}")));
        };
        let bad = |what: &str, s: &str| Error::line(path, 1, format!("{what} {s:?} is not a non-negative integer"));
        Ok(Property {
            classes: classes.parse().map_err(|_| bad("num_classes", classes))?,
            height: height.parse().map_err(|_| bad("height", height))?,
            width: width.parse().map_err(|_| bad("width", width))?,
        })
    }

    /// The file's line, newline included: `classes,height,width`.
    pub(crate) fn to_line(self) -> String {
        format!("{},{},{}\n", self.classes, self.height, self.width)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        Ok(facekit_io::durable::write(path, self.to_line().as_bytes())?)
    }
}
