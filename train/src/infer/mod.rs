//! Running a trained network: embeddings of datasets and photo folders ([`embed`]), the
//! verification protocols with a network ([`verify`]: LFW pairs, insightface `.bin`, over
//! [`facekit_eval`]'s metrics), IJB-B/IJB-C face features ([`ijb`]), photos prepared as pack prepares them ([`faces`]), and export for
//! use without facekit ([`export`]); a network found and rebuilt from its files through
//! [`crate::run`], embedded through [`crate::embedding`].

pub mod embed;
pub mod export;
pub mod faces;
pub mod ijb;
pub mod verify;
