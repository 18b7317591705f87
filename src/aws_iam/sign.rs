//! The token: a SigV4 presigned URL, signed with credentials from
//! aws-config's default chain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::sync::OnceCell;

use super::{AwsIam, IamError, IamService, TOKEN_LIFETIME};

/// A token this old is replaced: well before it expires.
const RENEW_AFTER: Duration = Duration::from_secs(600);

impl IamService {
    fn name(self) -> &'static str {
        match self {
            IamService::Elasticache => "elasticache",
            IamService::Memorydb => "memorydb",
        }
    }
}

/// The token for `iam` signed with `credentials` at `at`: the presigned URL
/// without its scheme, byte for byte what the AWS SDKs make.
pub fn token(iam: &AwsIam, credentials: Credentials, at: SystemTime) -> Result<String, IamError> {
    let mut url = format!(
        "https://{}/?Action=connect&User={}",
        iam.cluster_id,
        escape(&iam.user)
    );
    if iam.serverless {
        url.push_str("&ResourceType=ServerlessCache");
    }
    let scope = Scope {
        region: &iam.region,
        service: iam.service.name(),
        at,
    };
    let instructions = scope.sign(credentials, "GET", &url, &[], Some(TOKEN_LIFETIME))?;
    // The SDKs put the signature last.
    let mut params: Vec<(&str, &str)> = instructions
        .params()
        .iter()
        .map(|(name, value)| (*name, value.as_ref()))
        .collect();
    params.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
    for (name, value) in params {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&escape(value));
    }
    Ok(url.trim_start_matches("https://").to_string())
}

/// Where and when a request is signed.
struct Scope<'a> {
    region: &'a str,
    service: &'a str,
    at: SystemTime,
}

impl Scope<'_> {
    /// Signs a bodiless request: presigned (query parameters valid for
    /// `expires`) or, without `expires`, in headers, the form AWS's
    /// published SigV4 test vectors give.
    fn sign(
        &self,
        credentials: Credentials,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        expires: Option<Duration>,
    ) -> Result<aws_sigv4::http_request::SigningInstructions, IamError> {
        let failed = |e: &dyn std::fmt::Display| IamError::Signing(e.to_string());
        let mut settings = SigningSettings::default();
        if let Some(expires) = expires {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(expires);
        }
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.at)
            .settings(settings)
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        Ok(instructions)
    }
}

/// Percent-encoding as SigV4 does it (RFC 3986 unreserved characters kept).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where one IAM user's tokens come from: the credentials chain, made at
/// first use, and the current token with when it was made.
struct TokenSource {
    iam: AwsIam,
    chain: OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
    current: Mutex<Option<(String, SystemTime)>>,
}

impl TokenSource {
    async fn token_now(&self) -> Result<String, IamError> {
        let now = SystemTime::now();
        if let Ok(current) = self.current.lock() {
            if let Some((token, made)) = current.as_ref() {
                if now.duration_since(*made).unwrap_or_default() < RENEW_AFTER {
                    return Ok(token.clone());
                }
            }
        }
        let region = aws_config::Region::new(self.iam.region.clone());
        let chain = self
            .chain
            .get_or_init(|| async {
                // The sources that ask over HTTP (container and instance
                // metadata, STS for a web identity) use rustls with ring, as
                // the proxy's own TLS does, and the system's trusted roots.
                let https = aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https();
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .configure(ProviderConfig::default().with_http_client(https))
                    .region(region)
                    .build()
                    .await
            })
            .await;
        let credentials = chain
            .provide_credentials()
            .await
            .map_err(|e| IamError::Credentials(e.to_string()))?;
        let token = token(&self.iam, credentials, now)?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((token.clone(), now));
        }
        Ok(token)
    }
}

/// The current token for `iam` (one source per IAM user and cache, kept
/// for the process, so every connection shares its renewals).
pub async fn token_now(iam: &AwsIam) -> Result<String, IamError> {
    static SOURCES: OnceLock<Mutex<HashMap<AwsIam, Arc<TokenSource>>>> = OnceLock::new();
    let source = {
        let mut sources = SOURCES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sources
            .entry(iam.clone())
            .or_insert_with(|| {
                Arc::new(TokenSource {
                    iam: iam.clone(),
                    chain: OnceCell::new(),
                    current: Mutex::new(None),
                })
            })
            .clone()
    };
    source.token_now().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iam(cluster_id: &str, region: &str, serverless: bool) -> AwsIam {
        AwsIam {
            region: region.into(),
            cluster_id: cluster_id.into(),
            user: "iam-user".into(),
            service: IamService::Elasticache,
            serverless,
        }
    }

    /// AWS's published SigV4 test suite (get-vanilla,
    /// get-vanilla-query-order-key-case, post-vanilla: the credentials,
    /// time, region and service the suite fixes), signed by the same code
    /// as the tokens, in the header form the suite gives.
    #[test]
    fn the_signing_matches_aws_published_test_vectors() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let scope = Scope {
            region: "us-east-1",
            service: "service",
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        };
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        for (method, url, signature) in [
            (
                "GET",
                "https://example.amazonaws.com/",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "POST",
                "https://example.amazonaws.com/",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let headers = [("host", "example.amazonaws.com")];
            let signed = scope
                .sign(credentials.clone(), method, url, &headers, None)
                .unwrap();
            let authorization = signed
                .headers()
                .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                .map(|(_, value)| value.to_string())
                .expect("an Authorization header");
            assert_eq!(
                authorization,
                format!("{prefix}{signature}"),
                "{method} {url}"
            );
        }
    }

    /// Tokens byte for byte as botocore's RequestSigner makes them (the
    /// way AWS's documentation generates an ElastiCache IAM token), for the
    /// same fixed credentials at the same frozen time: see
    /// tests/python/aws_iam_token.py, which tests/it/health.rs runs.
    #[test]
    fn tokens_match_the_aws_sdk() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let with_session = Credentials::new(
            "AKIDEXAMPLE",
            secret,
            Some("SESSION/TOKEN+x".into()),
            None,
            "test",
        );
        assert_eq!(
            token(&iam("my-cluster", "us-east-1", false), with_session, at).unwrap(),
            "my-cluster/?Action=connect&User=iam-user&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Felasticache%2Faws4_request\
             &X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Security-Token=SESSION%2FTOKEN%2Bx\
             &X-Amz-Signature=4c3292673f1eeccceaaf93f6eeb5a2f7ea770360b5b3f757c7e6b4552729f1b3"
        );
        let plain = Credentials::new("AKIDEXAMPLE", secret, None, None, "test");
        assert_eq!(
            token(&iam("my-cache", "eu-west-1", true), plain, at).unwrap(),
            "my-cache/?Action=connect&User=iam-user&ResourceType=ServerlessCache\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Feu-west-1%2Felasticache%2Faws4_request\
             &X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=6bbfb65ccf244d9ffb46d13be77637a997d43bb27068d3e4c4ccaf1949340e6f"
        );
    }
}
