//! Plan executor: rate limits, retries, splitting.

pub mod backoff;
pub mod limiter;

pub use backoff::Backoff;
pub use limiter::RateLimiter;
