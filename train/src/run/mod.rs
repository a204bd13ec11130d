//! What training and inference share about a run, below both of them: where everything of a run
//! folder is ([`paths`]: every file name of a run folder, in one place, and [`paths::locate`]:
//! the weights and `net.json` of a run, an export or a file), how a network computes
//! ([`numerics`]: device, precision, memory format), and a network rebuilt from its `net.json`
//! and weights ([`net`]).
//!
//! The trainer writes a run folder and the rest of facekit reads it (`embed`, `eval`, `export`,
//! `train --init`): both spell its paths here, so that neither imports the other.

pub mod net;
pub mod numerics;
pub mod paths;
