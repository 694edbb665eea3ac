//! Plan executor: rate limits, retries, splitting (SKELETON: owned by the push owner).
