//! Alibaba Cloud API access: the pure RPC signatures (`sign`: v1 and V3; the client signs
//! with the one `[aliyun] signature` names, the emulator accepts both), the HTTP client
//! (`client`), error
//! decoding and classification in one place (`error`), the credential chain
//! (`credentials`), and the CDN as a target of the executor (`cdn`, implementing
//! `push::Target`).
//!
//! Invariants: the AccessKey secret never travels (only signatures made with it do);
//! `SSLPri` travels only in the form body of a POST; no error, log line or `Debug` output of this module carries either. Each client
//! call is one attempt, freshly signed; retrying is the executor's (`push`) job.

pub mod cas;
pub mod cdn;
pub mod client;
pub mod credentials;
pub(crate) mod dcdn;
pub mod error;
pub(crate) mod fallback;
pub(crate) mod http;
pub mod sign;

pub use cas::CasStore;
pub use cdn::AliyunCdn;
pub use client::ClientError;
pub use client::ServedCert;
pub use client::{BatchSetRequest, CasBinding, Client, SetSslRequest};
pub use credentials::CredentialsError;
pub use credentials::{CredentialProvider, Credentials, Secret};
pub use error::ApiError;
pub use error::Class;
