//! Finding certificate material on disk (SKELETON: owned by the source module's owner).
