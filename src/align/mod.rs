//! Face detection, landmarks and alignment to a face chip.
