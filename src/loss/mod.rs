//! Losses: ArcFace for identity, softmax for gender, DEX-style expected value for age.
