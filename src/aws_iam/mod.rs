//! ElastiCache and MemoryDB IAM authentication: the AUTH password is a
//! SigV4-presigned `connect` request (valid 15 minutes) for the IAM user,
//! signed with credentials from the usual AWS sources (environment, web
//! identity token file, container or instance metadata, via aws-config).
//! Tokens are renewed before they expire; each (re)connect takes the
//! current one.
//!
//! The signing and the credentials need the AWS crates (cargo feature
//! `aws-iam`, on by default); a build without them still reads the
//! configuration, and refuses it.

use std::time::Duration;

use serde::Deserialize;

#[cfg(feature = "aws-iam")]
mod sign;
#[cfg(feature = "aws-iam")]
pub use sign::{token, token_now};

/// How long a token is valid (the services' limit).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// `[[backends]] aws_iam = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsIam {
    /// The region of the cache, e.g. `us-east-1`.
    pub region: String,
    /// The replication group or cache (cluster) name, lower case.
    pub cluster_id: String,
    /// The IAM-enabled user, also the AUTH user name.
    pub user: String,
    #[serde(default)]
    pub service: IamService,
    /// An ElastiCache Serverless cache.
    #[serde(default)]
    pub serverless: bool,
}

/// Which service signs the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IamService {
    #[default]
    Elasticache,
    Memorydb,
}

/// Why no token could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IamError {
    #[error("AWS credentials: {0}")]
    Credentials(String),
    #[error("signing the IAM token: {0}")]
    Signing(String),
    #[error("this session-proxy was built without AWS IAM authentication (cargo feature aws-iam)")]
    NotBuilt,
}

/// Without the AWS crates no token can be made.
#[cfg(not(feature = "aws-iam"))]
pub async fn token_now(_iam: &AwsIam) -> Result<String, IamError> {
    Err(IamError::NotBuilt)
}
