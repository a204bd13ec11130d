//! Decoding untrusted image files into RGB.
