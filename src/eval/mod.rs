//! Verification metrics, embeddings and export.
