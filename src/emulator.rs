//! Local stand-in for the CDN certificate API (SKELETON: owned by the emulator owner).
