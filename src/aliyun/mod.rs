//! Alibaba Cloud API access: the pure RPC v1 signer, the HTTP client with error
//! classification, and the credential chain.

pub mod client;
pub mod credentials;
pub mod error;
pub mod sign;
