//! The pack crate's tests, one binary: photo decoding, faults, alignment, chips like a dataset's
//! (dlib parts with feature `dlib`), the RecordIO import's plan and workers, the pipeline's crash
//! recovery.

#[cfg(feature = "dlib")]
mod align_arcface_reference;
#[cfg(feature = "dlib")]
mod align_detect;
#[cfg(feature = "dlib")]
mod align_dlib_reference;
#[cfg(feature = "dlib")]
mod align_mtcnn_reference;
mod align_template;
mod chips;
mod photo_decode;
mod photo_faults;
mod pipeline_faults;
mod rec_import;
mod rec_split;
